package expert

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/tally"
	"github.com/mwpeer/mwpeer/internal/wire"
)

// RemoteError is an expert call the remote peer answered with an error. A
// busy answer unwraps to inference.ErrBusy, a refusal by the host's policy
// to inference.ErrRefused and a bad request to inference.ErrInvalidRequest.
type RemoteError struct {
	Status byte
	Msg    string
}

func (e *RemoteError) Error() string {
	names := map[byte]string{StatusNotFound: "not hosted", StatusBad: "bad request", StatusBusy: "busy", StatusFailed: "failed", StatusRefused: "refused"}
	return fmt.Sprintf("remote expert %s: %s", names[e.Status], e.Msg)
}

// Unwrap returns the sentinel of e's status, or nil.
func (e *RemoteError) Unwrap() error {
	switch e.Status {
	case StatusBusy:
		return inference.ErrBusy
	case StatusBad:
		return inference.ErrInvalidRequest
	case StatusRefused:
		return inference.ErrRefused
	}
	return nil
}

// ErrNotFinite is wrapped when a host answered with rows holding a NaN or
// an infinity: no expert of a working model computes those, so the host is
// computing wrongly (or lying). The stream is dropped.
var ErrNotFinite = errors.New("expert answer is not finite")

// conn is an expert-call stream with its buffers.
type conn struct {
	str  network.Stream
	r    *bufio.Reader
	w    *bufio.Writer
	hdr  []byte
	used time.Time
}

// Client makes expert calls, reusing streams: a stream carries one call at
// a time, and after a clean answer it goes back to a small per-peer pool.
type Client struct {
	// Prepare, if set, is called before a new stream is opened to p, with
	// the call's context. It applies the relay policy prompts obey: it may
	// wait for a direct connection, refuse (its error ends the call), or
	// return ctx, or a context derived from it that allows a limited
	// (relayed) connection. With Prepare nil, calls never go over a limited
	// connection.
	Prepare func(ctx context.Context, p peer.ID) (context.Context, error)

	h       host.Host
	maxIdle int
	idleFor time.Duration

	mu     sync.Mutex
	idle   map[peer.ID][]*conn
	closed bool

	// Calls counts calls answered; BytesOut and BytesIn count the header and
	// row bytes written and read (libp2p's own framing not included).
	Calls, BytesOut, BytesIn atomic.Uint64
	// Meter counts the calls answered with rows, per host and model ID
	// (ModelKey.String), for settling with each host: a call, its rows and
	// rows × row length values. NewClient makes it; a caller that settles
	// takes the counts from it (moe.Experts.Settle).
	Meter *tally.Meter
}

// NewClient returns a Client that opens streams from h.
func NewClient(h host.Host) *Client {
	return &Client{h: h, maxIdle: 8, idleFor: time.Minute, idle: make(map[peer.ID][]*conn), Meter: tally.NewMeter(0)}
}

// Close resets the pooled streams; calls in progress finish or fail on
// their own deadlines.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for p, cs := range c.idle {
		for _, cn := range cs {
			cn.str.Reset()
		}
		delete(c.idle, p)
	}
	return nil
}

func (c *Client) get(p peer.ID) *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := c.idle[p]
	for len(cs) > 0 {
		cn := cs[len(cs)-1]
		cs = cs[:len(cs)-1]
		if time.Since(cn.used) < c.idleFor {
			c.idle[p] = cs
			return cn
		}
		cn.str.Reset()
	}
	delete(c.idle, p)
	return nil
}

func (c *Client) put(p peer.ID, cn *conn) {
	cn.used = time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.idle[p]) >= c.maxIdle {
		cn.str.Close()
		return
	}
	c.idle[p] = append(c.idle[p], cn)
}

// Call asks p for expert (layer, expert) of model on the rows in, into out
// (rows of the same length). ctx bounds the call; a stream taken from the
// pool that turns out dead is replaced once. The answer is read into out
// exactly: rows × row length values of the request, never more; an answer
// holding a NaN or an infinity fails with ErrNotFinite (out is then
// garbage).
func (c *Client) Call(ctx context.Context, p peer.ID, model ModelKey, layer, expert int, in, out [][]float32) error {
	if len(in) != len(out) || len(in) == 0 {
		return fmt.Errorf("%d rows in, %d out", len(in), len(out))
	}
	h := header{model: model, layer: layer, expert: expert, rows: len(in), dim: len(in[0])}
	for i := range in {
		if len(in[i]) != h.dim || len(out[i]) != h.dim {
			return fmt.Errorf("row %d has length %d/%d, want %d", i, len(in[i]), len(out[i]), h.dim)
		}
	}
	if err := h.check(); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("expert call without a deadline")
	}
	if cn := c.get(p); cn != nil {
		err := c.call(ctx, cn, h, in, out)
		if err == nil || reusable(err) || ctx.Err() != nil {
			if err == nil || reusable(err) {
				c.put(p, cn)
			}
			return err
		}
		// A pooled stream the remote end closed: try a fresh one.
	}
	sctx := ctx
	if c.Prepare != nil {
		var err error
		if sctx, err = c.Prepare(ctx, p); err != nil {
			return fmt.Errorf("expert call to %s: %w", p.ShortString(), err)
		}
	}
	str, err := wire.Open(sctx, c.h, p, ID, ServiceName)
	if err != nil {
		return err
	}
	cn := &conn{str: str, r: bufio.NewReaderSize(str, bufferSize), w: bufio.NewWriterSize(str, bufferSize), hdr: make([]byte, headerSize)}
	err = c.call(ctx, cn, h, in, out)
	if err == nil || reusable(err) {
		c.put(p, cn)
	}
	return err
}

// reusable reports whether a stream is still in step after the call failed
// with err: the remote end took the rows and answered (busy or failed);
// after refusing a call it closes the stream.
func reusable(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && (re.Status == StatusBusy || re.Status == StatusFailed)
}

// call runs one call on cn; on any error but a remote one the stream is reset.
func (c *Client) call(ctx context.Context, cn *conn, h header, in, out [][]float32) (err error) {
	dl, _ := ctx.Deadline()
	cn.str.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { cn.str.Reset() })
	defer func() {
		stop()
		var re *RemoteError
		if err != nil && !errors.As(err, &re) {
			cn.str.Reset()
			if ctx.Err() != nil {
				err = fmt.Errorf("expert call: %w", ctx.Err())
			}
		}
	}()
	h.marshal(cn.hdr)
	if _, err := cn.w.Write(cn.hdr); err != nil {
		return err
	}
	if err := writeRows(cn.w, in, nil); err != nil {
		return err
	}
	if err := cn.w.Flush(); err != nil {
		return err
	}
	c.BytesOut.Add(uint64(headerSize + h.payload()))
	status, msg, err := readStatus(cn.r)
	if err != nil {
		return err
	}
	c.BytesIn.Add(uint64(3 + len(msg)))
	if status != StatusOK {
		return &RemoteError{Status: status, Msg: msg}
	}
	if err := readRows(cn.r, out, nil); err != nil {
		return err
	}
	c.BytesIn.Add(uint64(h.payload()))
	if err := finite(out); err != nil {
		return err
	}
	c.Calls.Add(1)
	if c.Meter != nil {
		c.Meter.Add(cn.str.Conn().RemotePeer(), h.model.String(), h.work())
	}
	cn.str.SetDeadline(time.Time{})
	return nil
}

// finite fails with ErrNotFinite, naming the first offending value, when a
// row holds a NaN or an infinity.
func finite(rows [][]float32) error {
	for i, r := range rows {
		for j, v := range r {
			// v-v is 0 for every finite v, NaN for NaN and ±Inf.
			if v-v != 0 {
				return fmt.Errorf("%w: row %d value %d is %v", ErrNotFinite, i, j, v)
			}
		}
	}
	return nil
}
