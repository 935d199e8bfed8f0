package catchup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/internal/wire"
)

const (
	// ID is the protocol ID.
	ID = "/mwpeer/catalog/1.0.0"
	// ServiceName is the resource-manager service of its streams.
	ServiceName = "mwpeer.catalog"

	// MaxFrameSize bounds an envelope frame: a signed announcement at its
	// cap (experts.MaxAnnouncementSize).
	MaxFrameSize = 32 << 10
	// MaxRequestSize bounds the request frame.
	MaxRequestSize = 8 << 10
	// MaxWanted bounds the peer IDs one request may name.
	MaxWanted = 64
	// Deadline bounds a whole exchange, on both sides.
	Deadline = 10 * time.Second
	// DefaultMax is the default bound on the peers whose announcements one
	// request for everything is handed (ServiceConfig.Max) and accepts
	// (Fetch's max).
	DefaultMax = 2048
)

// request is the requester's frame.
type request struct {
	Peers []string `json:"peers,omitempty"`
}

// Source gives the signed envelopes a Service hands out, as experts.Catalog
// does: for each peer its full announcement, then its latest beat.
type Source interface {
	// Envelopes returns the envelopes of up to max peers.
	Envelopes(max int) [][]byte
	// EnvelopesOf returns the envelopes of the given peers that it holds.
	EnvelopesOf(ids []string) [][]byte
}

// ServiceConfig says what a Service hands out and to whom.
type ServiceConfig struct {
	// Max bounds the peers whose envelopes a request for everything is
	// handed (0: DefaultMax).
	Max int
	// Admit, if set, decides whether to answer caller (the peer on the
	// secure channel), who asks for the peers in wanted (nil: everything).
	// It runs once the request is read and before any envelope is sent; an
	// error resets the stream.
	Admit  func(caller peer.ID, wanted []string) error
	Logger *slog.Logger
}

// Service answers ID on a host from a Source.
type Service struct {
	h   host.Host
	src Source
	cfg ServiceConfig
	log *slog.Logger
}

// NewService registers the stream handler for ID on h. Zero fields of cfg
// take their defaults.
func NewService(h host.Host, src Source, cfg ServiceConfig) *Service {
	wire.Default(&cfg.Max, DefaultMax)
	s := &Service{h: h, src: src, cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	h.SetStreamHandler(ID, s.handle)
	return s
}

// Close removes the stream handler; streams being answered end within
// Deadline.
func (s *Service) Close() error {
	s.h.RemoveStreamHandler(ID)
	return nil
}

func (s *Service) handle(str network.Stream) {
	defer str.Close()
	from := str.Conn().RemotePeer()
	// The reply is streamed frame by frame; one frame is the most it buffers.
	if err := wire.Attach(str, ServiceName, MaxFrameSize, network.ReservationPriorityLow); err != nil {
		s.log.Debug("catch-up stream refused", "peer", from.ShortString(), "err", err)
		return
	}
	_ = str.SetDeadline(time.Now().Add(Deadline))

	req, err := readRequest(str)
	if err != nil {
		str.Reset()
		return
	}
	if s.cfg.Admit != nil {
		if err := s.cfg.Admit(from, req.Peers); err != nil {
			s.log.Debug("catch-up refused", "peer", from.ShortString(), "err", err)
			str.Reset()
			return
		}
	}
	var envs [][]byte
	if len(req.Peers) > 0 {
		envs = s.src.EnvelopesOf(req.Peers)
	} else {
		envs = s.src.Envelopes(s.cfg.Max)
	}
	for _, env := range envs {
		if env == nil {
			continue
		}
		if err := wire.Write(str, env, MaxFrameSize); err != nil {
			str.Reset()
			return
		}
	}
}

// Fetch asks p, over a connection h already has, for the envelopes it holds:
// those of the peers in wanted (at most MaxWanted), or everything when wanted
// is empty. It accepts a full announcement and a beat for each of up to max
// peers (0: DefaultMax), and the responder's own, each of at most
// MaxFrameSize bytes, within Deadline. It returns the envelopes as they came,
// unverified, and with an error those that came before it.
func Fetch(ctx context.Context, h host.Host, p peer.ID, wanted []string, max int) ([][]byte, error) {
	if len(wanted) > MaxWanted {
		return nil, fmt.Errorf("catch-up for %d peers: at most %d", len(wanted), MaxWanted)
	}
	wire.Default(&max, DefaultMax)
	ctx, cancel := context.WithTimeout(ctx, Deadline)
	defer cancel()
	s, err := wire.Open(network.WithNoDial(ctx, "catalog catch-up"), h, p, ID, ServiceName)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	release, err := wire.Reserve(s, MaxFrameSize, network.ReservationPriorityLow)
	if err != nil {
		s.Reset()
		return nil, err
	}
	defer release()
	deadline, _ := ctx.Deadline()
	_ = s.SetDeadline(deadline)
	if err := wire.WriteJSON(s, request{Peers: wanted}, MaxRequestSize); err != nil {
		s.Reset()
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return nil, err
	}
	// The envelopes kept are budgeted too; the stream's scope releases them
	// when Fetch closes it.
	envs, more, err := readEnvelopes(wire.NewReader(s, MaxFrameSize), max, func(n int) error {
		_, err := wire.Reserve(s, n, network.ReservationPriorityLow)
		return err
	})
	if err != nil || more {
		s.Reset() // broken, or more than promised: stop reading
	}
	return envs, err
}

// readRequest reads a request frame; a stream closed before one is a
// request for everything.
func readRequest(r io.Reader) (request, error) {
	var req request
	if err := wire.ReadJSON(wire.NewReader(r, MaxRequestSize), &req); err != nil {
		if errors.Is(err, io.EOF) {
			return request{}, nil
		}
		return request{}, err
	}
	if len(req.Peers) > MaxWanted {
		return request{}, fmt.Errorf("catch-up for %d peers: at most %d", len(req.Peers), MaxWanted)
	}
	return req, nil
}

// readEnvelopes reads the envelope frames of a reply, unverified: a full
// announcement and a beat for each of up to max peers, and the responder's
// own on top. keep budgets each envelope before it is kept. more reports a
// responder that sent more than that; with an error, the envelopes that came
// before it are returned.
func readEnvelopes(r wire.Reader, max int, keep func(n int) error) (envs [][]byte, more bool, err error) {
	for n := 0; n <= 2*max+1; n++ {
		data, err := r.ReadMsg()
		if errors.Is(err, io.EOF) {
			return envs, false, nil
		}
		if err != nil {
			return envs, false, err
		}
		if err := keep(len(data)); err != nil {
			r.ReleaseMsg(data)
			return envs, false, fmt.Errorf("keep envelope %d: %w", len(envs)+1, err)
		}
		envs = append(envs, append([]byte(nil), data...))
		r.ReleaseMsg(data)
	}
	return envs, true, nil
}
