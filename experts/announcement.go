package experts

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/membership"
)

// Domains every peer understands. A peer may declare any of them.
var Domains = []string{"general", "code", "math", "creative", "science", "reasoning"}

// Capabilities a model may announce (inference's Cap constants, which a
// test keeps equal to these).
var Capabilities = []string{"completion", "tools", "vision", "embedding", "thinking", "json"}

// ValidDomain reports whether d is one of Domains.
func ValidDomain(d string) bool {
	for _, x := range Domains {
		if x == d {
			return true
		}
	}
	return false
}

// MaxContext bounds a model's announced context length (16 Mi tokens);
// MaxVersion a peer's announced version string; MaxTTFTMs and MaxTPS a
// model's announced speed.
const (
	MaxContext = 1 << 24
	MaxVersion = 64
	MaxTTFTMs  = 10 * 60 * 1000
	MaxTPS     = 1e6
)

// Model is one model a peer serves.
type Model struct {
	Name   string `json:"name"`
	Digest string `json:"digest,omitempty"` // the backend's content digest (Ollama's sha256)
	Size   int64  `json:"size,omitempty"`   // bytes on disk
	Family string `json:"family,omitempty"`
	Engine string `json:"engine,omitempty"` // "ollama", "embedded" or "synthetic"
	// Kernels is the kernel set the embedded engine runs (llama.Kernels:
	// "avx2", "neon" or "generic"; "" for Ollama, synthetic, and peers that
	// predate the field). Sets differ in the last bits of their sums, so
	// only answers of one set are compared bit for bit or token for token.
	// It is a claim compared for equality only: a name this peer does not
	// know (a newer peer's set) matches only the same name.
	Kernels string `json:"kernels,omitempty"`
	// Context is the model's context length in tokens, as its engine
	// reports it (0: unknown).
	Context int `json:"context,omitempty"`
	// Capabilities is what the model can do, in inference's terms
	// (completion, tools, vision, embedding, thinking, json); empty means
	// completion only (what peers that predate capabilities serve).
	Capabilities []string `json:"caps,omitempty"`
	// TTFTMs and TPS are the author's own measure of its engine serving
	// this model over its recent calls: milliseconds from a request's start
	// to its first token, and decode tokens per second (0: not measured).
	// Claims: a router uses them only for a peer it has not timed itself,
	// labelled reported, so an unknown peer is not taken for a typical one
	// when it says it is slow, and a liar is found out on its first call.
	// Equal leaves them out: a new figure rides on the next full
	// announcement rather than forcing one.
	TTFTMs float64 `json:"ttft_ms,omitempty"`
	TPS    float64 `json:"tps,omitempty"`
	// Params is what one token uses, known for this peer's own models and
	// never announced (it prices receipts; requesters bound it by Size).
	Params int64 `json:"-"`
}

// Hardware describes what a peer runs on.
type Hardware struct {
	CPUs     int    `json:"cpus,omitempty"`
	MemoryMB int64  `json:"memory_mb,omitempty"`
	GPU      string `json:"gpu,omitempty"`
	OS       string `json:"os,omitempty"`
	Arch     string `json:"arch,omitempty"`
}

// Announcement is what a peer says about itself over gossip. It travels inside
// a libp2p signed envelope (see Seal), so any peer can hand it on to another
// (the catch-up protocol does) and the receiver can still check who wrote it.
type Announcement struct {
	Peer     string `json:"peer"`        // base58 peer ID of the author; must match the signing key
	Seq      uint64 `json:"seq"`         // strictly increasing per author
	Time     int64  `json:"time_ms"`     // author's clock, Unix milliseconds
	Interval int64  `json:"interval_ms"` // author's heartbeat interval; receivers derive the TTL from it
	Leave    bool   `json:"leave,omitempty"`
	// A beat is the light heartbeat sent between full announcements: it
	// carries only the fields above, Load, and State, the Seq of the
	// author's latest full announcement. It keeps a known peer alive in
	// catalogs without re-sending everything.
	Beat  bool   `json:"beat,omitempty"`
	State uint64 `json:"state,omitempty"`
	// ShardBits is the announcement shard width the author uses (0 for
	// peers that predate automatic widths, and for an unsharded swarm).
	// Beats carry it too: it is how the peers of a shard see each other's
	// width (see AutoShard). A claim, counted only for peers the reader
	// vouches for.
	ShardBits int `json:"shard_bits,omitempty"`

	Addrs    []string   `json:"addrs,omitempty"`
	Models   []Model    `json:"models,omitempty"`
	Domains  []string   `json:"domains,omitempty"`
	Hardware Hardware   `json:"hardware,omitzero"`
	Capacity int        `json:"capacity,omitempty"` // concurrent requests it accepts
	Load     int        `json:"load,omitempty"`     // requests in progress
	Location *geo.Point `json:"location,omitempty"`
	Region   string     `json:"region,omitempty"`
	// Version is the author's mwpeer version (a claim, shown as such).
	Version string                 `json:"version,omitempty"`
	RTT     map[string]float64     `json:"rtt_ms,omitempty"` // EWMA ping RTTs to peers it measures, ms
	Coord   *coordinate.Coordinate `json:"coord,omitempty"`  // Vivaldi network coordinate
	Shards  []ShardSummary         `json:"shards,omitempty"` // shards of MoE models it holds
	// Cert is the author's membership certificate (membership.Issue), for
	// peers that serve and route to certified members only. It must name
	// the author; whether its issuer is trusted is each reader's question.
	Cert []byte `json:"cert,omitempty"`
}

// Limits on an announcement. They keep one peer from making every other peer
// hold or forward much: MaxAnnouncementSize bounds the signed envelope on
// the wire, the counts bound the decoded lists.
const (
	MaxAnnouncementSize = 32 << 10 // bytes, signed envelope included
	MaxAddrs            = 16
	MaxModels           = 64
	MaxCapabilities     = 8 // per model
	MaxRTTRow           = 16
	MaxString           = 256
	MaxFutureSkew       = 30 * time.Second // clocks may disagree by this much
	MinInterval         = time.Second
	MaxInterval         = 10 * time.Minute
	TTLIntervals        = 3               // missed heartbeats before a peer is forgotten
	TTLGrace            = 2 * time.Second // on top, for gossip propagation
)

// TTL is how long an announcement with the given heartbeat interval stays
// valid without a newer one: three intervals plus two seconds. At the default
// 5 s interval a silent peer is forgotten after 17 s.
func TTL(interval time.Duration) time.Duration {
	interval = max(min(interval, MaxInterval), MinInterval)
	return TTLIntervals*interval + TTLGrace
}

// TTL of this announcement.
func (a *Announcement) TTL() time.Duration { return TTL(time.Duration(a.Interval) * time.Millisecond) }

// At returns the author's timestamp.
func (a *Announcement) At() time.Time { return time.UnixMilli(a.Time) }

// The record.Record implementation lets an Announcement travel in a signed envelope.

const envelopeDomain = "mwpeer-announcement"

var envelopeCodec = []byte("/mwpeer/announcement/1")

func (a *Announcement) Domain() string                 { return envelopeDomain }
func (a *Announcement) Codec() []byte                  { return envelopeCodec }
func (a *Announcement) MarshalRecord() ([]byte, error) { return json.Marshal(a) }
func (a *Announcement) UnmarshalRecord(b []byte) error {
	*a = Announcement{}
	return json.Unmarshal(b, a)
}

// Seal signs a with key and returns the envelope's bytes.
func Seal(a *Announcement, key crypto.PrivKey) ([]byte, error) {
	env, err := record.Seal(a, key)
	if err != nil {
		return nil, fmt.Errorf("seal announcement: %w", err)
	}
	data, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("seal announcement: %w", err)
	}
	if len(data) > MaxAnnouncementSize {
		return nil, fmt.Errorf("announcement of %d bytes exceeds the %d-byte cap", len(data), MaxAnnouncementSize)
	}
	return data, nil
}

// Reject reasons, also the labels of the rejection counters.
const (
	RejectOversized = "oversized"
	RejectMalformed = "malformed"
	RejectSignature = "bad_signature"
	RejectForeign   = "wrong_author" // signed by a key that is not the announced peer's, or relayed by an impostor
	RejectFuture    = "future"
	RejectStale     = "stale"
	RejectInvalid   = "invalid" // decodes and verifies, but breaks a limit
)

// RejectReasons lists every reason, in a stable order.
var RejectReasons = []string{RejectOversized, RejectMalformed, RejectSignature, RejectForeign, RejectFuture, RejectStale, RejectInvalid}

// RejectError says why an announcement was refused.
type RejectError struct {
	Reason string
	Err    error
}

func (e *RejectError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *RejectError) Unwrap() error { return e.Err }

func reject(reason string, format string, args ...any) error {
	return &RejectError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the reject reason of err, or "" when err is not a rejection.
func ReasonOf(err error) string {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// FullEvery is how many heartbeats pass between two full announcements
// when nothing changes; the others are beats.
const FullEvery = 6

// Open checks a signed announcement from an untrusted source: size,
// signature, that the signer is the announced peer, the timestamps against
// now, and every limit. It returns the announcement or a *RejectError.
func Open(data []byte, now time.Time) (*Announcement, error) {
	return open(data, now, false)
}

// OpenRelayed is Open for an announcement handed on by another peer
// (catch-up): a full announcement may be as old as FullEvery intervals plus
// its TTL, since beats kept its author alive meanwhile.
func OpenRelayed(data []byte, now time.Time) (*Announcement, error) {
	return open(data, now, true)
}

func open(data []byte, now time.Time, relayed bool) (*Announcement, error) {
	if len(data) > MaxAnnouncementSize {
		return nil, reject(RejectOversized, "%d bytes, cap %d", len(data), MaxAnnouncementSize)
	}
	var a Announcement
	env, err := record.ConsumeTypedEnvelope(data, &a)
	if err != nil {
		if errors.Is(err, record.ErrInvalidSignature) {
			return nil, reject(RejectSignature, "%v", err)
		}
		return nil, reject(RejectMalformed, "%v", err)
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return nil, reject(RejectMalformed, "signer key: %v", err)
	}
	author, err := peer.Decode(a.Peer)
	if err != nil {
		return nil, reject(RejectMalformed, "peer %q: %v", trunc(a.Peer), err)
	}
	if signer != author {
		return nil, reject(RejectForeign, "signed by %s, claims to be %s", signer.ShortString(), author.ShortString())
	}
	if err := a.validate(); err != nil {
		return nil, reject(RejectInvalid, "%v", err)
	}
	at := a.At()
	if at.After(now.Add(MaxFutureSkew)) {
		return nil, reject(RejectFuture, "dated %s ahead", at.Sub(now).Round(time.Millisecond))
	}
	maxAge := a.TTL()
	if relayed && !a.Beat && !a.Leave {
		maxAge += FullEvery * time.Duration(a.Interval) * time.Millisecond
	}
	if now.Sub(at) > maxAge {
		return nil, reject(RejectStale, "dated %s ago, TTL %s", now.Sub(at).Round(time.Millisecond), maxAge)
	}
	return &a, nil
}

func (a *Announcement) validate() error {
	if a.Seq == 0 {
		return errors.New("seq 0")
	}
	// Compared in milliseconds: a huge interval would overflow a Duration
	// and could wrap into the range.
	if a.Interval < MinInterval.Milliseconds() || a.Interval > MaxInterval.Milliseconds() {
		return fmt.Errorf("interval %d ms outside [%s, %s]", a.Interval, MinInterval, MaxInterval)
	}
	if a.Beat && (len(a.Addrs)+len(a.Models)+len(a.Domains)+len(a.RTT)+len(a.Shards)+len(a.Cert) > 0 || a.Coord != nil || a.Location != nil || a.Leave || a.State == 0) {
		return errors.New("a beat carries only liveness, load and state")
	}
	if a.ShardBits < 0 || a.ShardBits > MaxAnnounceShardBits {
		return fmt.Errorf("shard width %d outside 0..%d", a.ShardBits, MaxAnnounceShardBits)
	}
	if len(a.Addrs) > MaxAddrs {
		return fmt.Errorf("%d addresses, cap %d", len(a.Addrs), MaxAddrs)
	}
	if len(a.Models) > MaxModels {
		return fmt.Errorf("%d models, cap %d", len(a.Models), MaxModels)
	}
	if len(a.Domains) > len(Domains) {
		return fmt.Errorf("%d domains, cap %d", len(a.Domains), len(Domains))
	}
	if len(a.RTT) > MaxRTTRow {
		return fmt.Errorf("RTT row of %d, cap %d", len(a.RTT), MaxRTTRow)
	}
	if len(a.Shards) > MaxShardModels {
		return fmt.Errorf("shards of %d models, cap %d", len(a.Shards), MaxShardModels)
	}
	for i := range a.Shards {
		if err := a.Shards[i].validate(); err != nil {
			return err
		}
	}
	for _, s := range a.Addrs {
		if len(s) > MaxString {
			return errors.New("address too long")
		}
	}
	for _, m := range a.Models {
		if m.Name == "" || len(m.Name) > MaxString || len(m.Digest) > MaxString || len(m.Family) > MaxString || len(m.Engine) > MaxString || len(m.Kernels) > MaxString {
			return fmt.Errorf("model %q: empty or too long field", trunc(m.Name))
		}
		if m.Context < 0 || m.Context > MaxContext {
			return fmt.Errorf("model %q: context %d outside 0..%d", trunc(m.Name), m.Context, MaxContext)
		}
		if !(m.TTFTMs >= 0 && m.TTFTMs <= MaxTTFTMs) || !(m.TPS >= 0 && m.TPS <= MaxTPS) {
			return fmt.Errorf("model %q: speed outside 0..%d ms, 0..%g tokens/s", trunc(m.Name), MaxTTFTMs, float64(MaxTPS))
		}
		if len(m.Capabilities) > MaxCapabilities {
			return fmt.Errorf("model %q: %d capabilities, cap %d", trunc(m.Name), len(m.Capabilities), MaxCapabilities)
		}
		for _, c := range m.Capabilities {
			if !slices.Contains(Capabilities, c) {
				return fmt.Errorf("model %q: unknown capability %q", trunc(m.Name), trunc(c))
			}
		}
	}
	for _, d := range a.Domains {
		if !ValidDomain(d) {
			return fmt.Errorf("unknown domain %q", trunc(d))
		}
	}
	if len(a.Version) > MaxVersion {
		return fmt.Errorf("version longer than %d bytes", MaxVersion)
	}
	if a.Beat && a.Version != "" {
		return errors.New("a beat carries no version")
	}
	if len(a.Region) > MaxString || len(a.Hardware.GPU) > MaxString || len(a.Hardware.OS) > MaxString || len(a.Hardware.Arch) > MaxString {
		return errors.New("string field too long")
	}
	if a.Capacity < 0 || a.Load < 0 {
		return errors.New("negative capacity or load")
	}
	if a.Location != nil {
		if err := a.Location.Validate(); err != nil {
			return err
		}
	}
	for id, ms := range a.RTT {
		if _, err := peer.Decode(id); err != nil {
			return fmt.Errorf("RTT row names %q: %v", trunc(id), err)
		}
		if math.IsNaN(ms) || ms < 0 || ms > 60000 {
			return fmt.Errorf("RTT %v ms out of range", ms)
		}
	}
	if a.Coord != nil {
		if !a.Coord.IsValid() || len(a.Coord.Vec) > 16 {
			return errors.New("invalid network coordinate")
		}
	}
	if len(a.Cert) > 0 {
		c, err := membership.Parse(a.Cert)
		if err != nil {
			return err
		}
		if c.Subject.String() != a.Peer {
			return fmt.Errorf("%w: it names %s", membership.ErrWrongSubject, trunc(c.Subject.String()))
		}
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// LocalHardware describes this machine: CPUs, memory (from /proc/meminfo,
// 0 where there is none), OS and architecture.
func LocalHardware() Hardware {
	return Hardware{CPUs: runtime.NumCPU(), MemoryMB: memTotalMB(), OS: runtime.GOOS, Arch: runtime.GOARCH}
}

func memTotalMB() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			return kb / 1024
		}
	}
	return 0
}

// Equal reports whether m and o say the same.
func (m Model) Equal(o Model) bool {
	return m.Name == o.Name && m.Digest == o.Digest && m.Size == o.Size && m.Family == o.Family && m.Engine == o.Engine && m.Kernels == o.Kernels &&
		m.Context == o.Context && m.Params == o.Params && slices.Equal(m.Capabilities, o.Capabilities)
}
