package mwpeer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"

	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/consent"
	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
	"github.com/mwpeer/mwpeer/inference"
	"github.com/mwpeer/mwpeer/inference/expert"
	"github.com/mwpeer/mwpeer/inference/infer"
	"github.com/mwpeer/mwpeer/inference/moe"
	"github.com/mwpeer/mwpeer/inference/sharding"
	"github.com/mwpeer/mwpeer/membership"
	"github.com/mwpeer/mwpeer/p2p"
	"github.com/mwpeer/mwpeer/routing"
)

// Engines a peer can serve with.
const (
	// EngineAuto is the default: Ollama when it answers at Config.Ollama,
	// else the embedded engine with the built-in model (random weights,
	// for trying the swarm), so that a fresh machine answers at once.
	EngineAuto      = "auto"
	EngineOllama    = "ollama"    // a local Ollama server
	EngineSynthetic = "synthetic" // a fake backend that emits tokens at a set rate, for measuring the overlay itself
	EngineEmbedded  = "embedded"  // a GGUF file run by the pure-Go engine (inference/llama)
	EngineNone      = "none"      // serve nothing; join, route and relay only
)

// Config is everything a peer needs. DefaultConfig fills it; the mwpeer
// command adjusts it from flags and MWPEER_* variables.
type Config struct {
	DataDir   string   // identity and state; "~/.mwpeer" by default
	Listen    []string // libp2p listen multiaddrs
	Announce  []string // extra multiaddrs to advertise (public addresses behind port forwarding)
	Bootstrap []string // multiaddrs with /p2p/<id> of peers to join through
	HTTPAddr  string   // where the HTTP API listens; "" for none
	// AllowedHosts are names the HTTP API answers to in the Host header
	// besides loopback and HTTPAddr's host; AllowedOrigins are the browser
	// origins (scheme://host[:port], or "*" for every one) that may call it
	// besides its own dashboard (see api.Guard).
	AllowedHosts   []string
	AllowedOrigins []string
	// HTTPInsecure lets the HTTP API listen on a non-loopback HTTPAddr
	// without API keys.
	HTTPInsecure bool

	Domains []string // domains this peer declares it is good at
	Models  []string // models to serve; empty means every model the engine has
	Engine  string   // EngineAuto, EngineOllama, EngineEmbedded, EngineSynthetic or EngineNone
	Ollama  string   // Ollama's base URL
	// OllamaParallel is how many calls Ollama runs at once with its
	// settings (OLLAMA_NUM_PARALLEL per model times OLLAMA_MAX_LOADED_MODELS,
	// which the command reads when either is set). It is the default
	// Capacity of a peer serving Ollama; 0 means measured (see
	// MeasuredCapacity).
	OllamaParallel int
	// ModelFile is the GGUF file EngineEmbedded serves; empty means the
	// built-in tiny model (see BuiltinModel).
	ModelFile string
	// Shards are directories of MoE model shards to serve (the first takes
	// fetched shards); HostExperts asks for parts of sharded models, fetched
	// from the swarm when missing.
	Shards      []string
	HostExperts []sharding.HostSpec
	// VerifyExperts is the share (0 to 1) of this peer's remote expert calls
	// spot-checked on a second replica, bit for bit; a host caught answering
	// wrongly is excluded (see moe.Experts.Verify). Default 0.02.
	VerifyExperts float64
	// VerifyAnswers is the share (0 to 1) of this peer's users' requests
	// answered verified even when they do not ask ("mwpeer":{"verify":true}
	// always does): two peers serving the same model digest, engine and kernel set
	// answer at temperature 0, the client gets the answer once both agree
	// token for token, a third decides a disagreement and the outvoted peer
	// is convicted. It costs a second computation, forces temperature 0 and
	// holds the stream until agreement, so it is off by default (0).
	VerifyAnswers float64
	// Backend, when set, is served instead of the one Engine names (Engine
	// still names it in announcements); tests use it to run a peer with a
	// misbehaving engine.
	Backend inference.Backend
	// Synthetic configures the synthetic engine (its Models default to Models).
	Synthetic inference.SyntheticConfig
	// Capacity is the concurrent requests served; 0 means what the engine
	// runs at once: for Ollama OllamaParallel, or when that is 0 what the
	// peer sees Ollama answer at once (MeasuredCapacity, growing); 1 for
	// the embedded engine (each generation uses every core); the number of
	// CPUs otherwise.
	Capacity int
	// QueueWait is how long a request waits for a serving slot when all
	// Capacity are taken before it is refused as busy (503; another expert
	// is asked).
	QueueWait time.Duration
	// FreeAllowance is the tokens a day this peer serves a peer that has no
	// credit with it before it ranks last (see ledger.Accounting).
	FreeAllowance int64
	// RemoteMaxTokens is the max_tokens of a prompt from another peer that
	// sets none, and RemoteMaxTokensCap the most one gets whatever it asks
	// (0: infer's defaults, 1024 and 4096); a policy file may lower them
	// per peer. ShardUploadRate and ShardPeerUploadRate bound the bytes of
	// shards uploaded per second, in all and to one peer (0: no limit).
	RemoteMaxTokens, RemoteMaxTokensCap  int
	ShardUploadRate, ShardPeerUploadRate int64
	// AuditPrompts keeps the text of prompts and answers in the audit chain
	// (ledger.AuditEntry), not only their hashes.
	AuditPrompts bool

	// Routing: score weights and the most experts asked in parallel.
	Weights routing.Weights
	MaxK    int

	Location *geo.Point
	Region   string

	DHTMode      string // auto, server or client (see p2p)
	RelayService bool   // offer circuit relay v2 when publicly reachable
	// Reachability is auto (AutoNAT decides), public or private. A peer the
	// operator knows is behind NAT reserves relay slots at once when private.
	Reachability string
	// MDNS finds peers on the local network by multicast DNS (go-libp2p's
	// p2p/discovery/mdns) and connects to them, with no bootstrap address,
	// under MDNSService (p2p.MDNSService when empty; a private swarm may
	// pick its own). The mwpeer command turns it on unless --mdns=false;
	// DefaultConfig leaves it off, so that a program that embeds peers (or
	// a test that starts many in one process) multicasts only if it asks.
	MDNS        bool
	MDNSService string

	// Announcements (see experts.GossipConfig for how the interval adapts).
	AnnounceMin  time.Duration
	AnnounceMax  time.Duration
	AnnounceRate float64
	// AnnounceShardBits splits announcements over 2^AnnounceShardBits
	// GossipSub topics by a hash prefix of the author's peer ID
	// (experts.GossipConfig.ShardBits): a peer's catalog then holds its
	// shard only and the DHT finds experts beyond it. For swarms past about
	// 1,000 peers per shard. AnnounceShardAuto (-1, the default): the
	// peers choose it from the swarm's size (experts.AutoShard), starting
	// unsharded; 0 or more pins it, and every peer of the swarm must then
	// use the same value.
	AnnounceShardBits int
	// With an automatic width, a shard splits when this peer counts more
	// than AnnounceShardSplit authors in it (0: 1,200) and merges under
	// AnnounceShardMerge (0: 250; twice it must stay under the split), at
	// most once per AnnounceShardDwell (0: 10 min); the previous topic is
	// kept AnnounceShardGrace after a change (0: 2 min).
	AnnounceShardSplit, AnnounceShardMerge int
	AnnounceShardDwell, AnnounceShardGrace time.Duration
	// CatalogPrefixCap bounds the catalog entries of one network prefix (a
	// /24, a /48, a relay's) that this peer neither is connected to nor has
	// measured (0: experts.DefaultPrefixCap, 64).
	CatalogPrefixCap int
	// CatalogMaxBytes bounds the bytes the catalog holds, whatever its
	// entries announce; past it strangers make room by the rules of a full
	// catalog (0: experts.DefaultMaxBytes, 40 MB).
	CatalogMaxBytes int64

	// ModelRefresh is how often the engine's model list is re-read.
	ModelRefresh time.Duration
	// Ping is how often connected peers are pinged for RTT.
	Ping time.Duration

	// SwarmKey makes the swarm private: only peers holding the same
	// pre-shared key can connect (p2p.ReadSwarmKey reads the file). A
	// private swarm runs over TCP only; QUIC listen addresses are dropped.
	SwarmKey pnet.PSK
	// TrustIssuers, operator public keys in membership.FormatIssuer's form,
	// make the swarm certified: this peer serves and asks only peers with a
	// valid certificate from one of them. Cert is this peer's own
	// (membership.Issue's binary form), announced and sent with requests.
	TrustIssuers []string
	Cert         []byte

	// PolicyFile is the consent policy (TOML, or YAML by its extension;
	// see package consent): what this peer shares with whom. Empty: every
	// model it serves, to anyone. It is re-read when it changes and on
	// Peer.ReloadPolicy.
	PolicyFile string
	// Grants are consent tokens other peers signed for this one; each is
	// presented to the peer that signed it.
	Grants []string

	// Serving holds the hooks of the serving path: every request this peer
	// serves for another passes through them.
	Serving Serving

	Logger *slog.Logger
}

// Serving are the hooks of the serving path, where budgets, consent and
// receipts plug in. Each knows the caller by the peer ID of the secure
// channel (the backend finds it with inference.Caller). Nil hooks admit
// everyone.
type Serving struct {
	// AdmitInfer runs before a prompt from another peer reaches the
	// backend; an error refuses it (the asking peer tries another expert).
	// It may lower req.MaxTokens (see infer.ServiceConfig.Admit).
	AdmitInfer func(ctx context.Context, caller peer.ID, req *inference.Request) error
	// ChargeInfer runs when the backend answered a prompt in full, before
	// the asking peer hears that it ended (see infer.ServiceConfig.Charge).
	ChargeInfer func(ctx context.Context, c infer.Completion)
	// CompleteInfer runs after every prompt served ends, with its token
	// counts and outcome.
	CompleteInfer func(ctx context.Context, c infer.Completion)
	// AdmitExpert runs before an expert call from another peer is computed;
	// an error answers it busy (the asking peer tries another replica).
	AdmitExpert func(ctx context.Context, caller peer.ID, c expert.Call) error
}

// DefaultConfig returns the configuration of a peer on the public swarm:
// TCP and QUIC on port 4001 over IPv4 and IPv6, HTTP on 127.0.0.1:8080,
// data in ~/.mwpeer, the local Ollama ($OLLAMA_HOST or 127.0.0.1:11434).
func DefaultConfig() Config {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	ollama := "http://127.0.0.1:11434"
	// OLLAMA_HOST is the documented exception to "nothing below cmd reads the
	// environment": it is Ollama's own variable and only a default here.
	if h := os.Getenv("OLLAMA_HOST"); h != "" {
		ollama = inference.OllamaURL(h)
	}
	return Config{
		DataDir: filepath.Join(home, ".mwpeer"),
		Listen: []string{
			"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1",
			"/ip6/::/tcp/4001", "/ip6/::/udp/4001/quic-v1",
		},
		HTTPAddr:      "127.0.0.1:8080",
		Domains:       []string{"general"},
		Engine:        EngineAuto,
		Ollama:        ollama,
		DHTMode:       p2p.DHTAuto,
		RelayService:  true,
		Reachability:  p2p.ReachabilityAuto,
		AnnounceMin:   5 * time.Second,
		AnnounceMax:   60 * time.Second,
		AnnounceRate:  20,
		ModelRefresh:  30 * time.Second,
		Weights:       routing.DefaultWeights(),
		MaxK:          3,
		FreeAllowance: 20000,
		VerifyExperts: moe.DefaultVerify,
		QueueWait:     5 * time.Second,
		Ping:          10 * time.Second,

		// What the catalog of other peers may hold.
		CatalogMaxBytes: experts.DefaultMaxBytes,

		// The width of announcement shards follows the swarm's size.
		AnnounceShardBits: AnnounceShardAuto,

		// What a stranger gets at most (see StreamLimits too).
		RemoteMaxTokens:    infer.DefaultMaxTokens,
		RemoteMaxTokensCap: infer.TokensCap,
	}
}

// FieldError is a bad Config value: Field names the Config field (the
// command maps it to its flag).
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func bad(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks the configuration and returns an error naming the first
// bad value.
func (c *Config) Validate() error {
	if len(c.Listen) == 0 {
		return bad("Listen", "no listen address")
	}
	if _, err := p2p.ParseAddrs(c.Listen); err != nil {
		return &FieldError{"Listen", err}
	}
	if _, err := p2p.ParseAddrs(c.Announce); err != nil {
		return &FieldError{"Announce", err}
	}
	if _, err := p2p.ParseBootstrap(c.Bootstrap); err != nil {
		return &FieldError{"Bootstrap", err}
	}
	for _, d := range c.Domains {
		if !experts.ValidDomain(d) {
			return bad("Domains", "unknown domain %q (want some of %s)", d, strings.Join(experts.Domains, ", "))
		}
	}
	switch c.Engine {
	case EngineAuto, EngineOllama, EngineSynthetic, EngineEmbedded, EngineNone:
	default:
		return bad("Engine", "unknown engine %q (want auto, ollama, embedded, synthetic or none)", c.Engine)
	}
	if c.Location != nil {
		if err := c.Location.Validate(); err != nil {
			return &FieldError{"Location", err}
		}
	}
	switch c.DHTMode {
	case p2p.DHTAuto, p2p.DHTServer, p2p.DHTClient:
	default:
		return bad("DHTMode", "unknown mode %q (want auto, server or client)", c.DHTMode)
	}
	switch c.Reachability {
	case "", p2p.ReachabilityAuto, p2p.ReachabilityPublic, p2p.ReachabilityPrivate:
	default:
		return bad("Reachability", "unknown value %q (want auto, public or private)", c.Reachability)
	}
	for _, o := range c.AllowedOrigins {
		if _, err := api.ParseOrigin(o); err != nil {
			return &FieldError{"AllowedOrigins", err}
		}
	}
	if c.AnnounceShardBits < AnnounceShardAuto || c.AnnounceShardBits > experts.MaxAnnounceShardBits {
		return bad("AnnounceShardBits", "%d, want 0 to %d or %d (automatic)", c.AnnounceShardBits, experts.MaxAnnounceShardBits, AnnounceShardAuto)
	}
	if err := c.autoShard().Validate(); err != nil {
		return &FieldError{Field: "AnnounceShardSplit", Err: err}
	}
	if len(c.SwarmKey) != 0 && len(c.SwarmKey) != 32 {
		return bad("SwarmKey", "%d bytes, want 32", len(c.SwarmKey))
	}
	for _, s := range c.TrustIssuers {
		if _, err := membership.ParseIssuer(s); err != nil {
			return &FieldError{"TrustIssuers", err}
		}
	}
	if len(c.Cert) > 0 {
		if _, err := membership.Parse(c.Cert); err != nil {
			return &FieldError{"Cert", err}
		}
	}
	if _, err := consent.NewWallet(c.Grants); err != nil {
		return &FieldError{"Grants", err}
	}
	if c.DataDir == "" {
		return bad("DataDir", "empty")
	}
	if c.MaxK < 1 || c.MaxK > 8 {
		return bad("MaxK", "%d is outside 1..8", c.MaxK)
	}
	if c.QueueWait < 0 {
		return bad("QueueWait", "%s is negative", c.QueueWait)
	}
	if c.FreeAllowance < 0 {
		return bad("FreeAllowance", "%d is negative", c.FreeAllowance)
	}
	if c.OllamaParallel < 0 {
		return bad("OllamaParallel", "%d is negative", c.OllamaParallel)
	}
	if c.Capacity < 0 {
		return bad("Capacity", "%d is negative", c.Capacity)
	}
	if c.RemoteMaxTokensCap < 0 || c.RemoteMaxTokensCap > infer.MaxTokens {
		return bad("RemoteMaxTokensCap", "%d is outside 0..%d", c.RemoteMaxTokensCap, infer.MaxTokens)
	}
	if c.RemoteMaxTokens < 0 || c.RemoteMaxTokensCap > 0 && c.RemoteMaxTokens > c.RemoteMaxTokensCap {
		return bad("RemoteMaxTokens", "%d is outside 0..%d (the cap)", c.RemoteMaxTokens, c.RemoteMaxTokensCap)
	}
	if c.ShardUploadRate < 0 || c.ShardPeerUploadRate < 0 {
		return bad("ShardUploadRate", "a negative rate")
	}
	if !(c.VerifyExperts >= 0 && c.VerifyExperts <= 1) {
		return bad("VerifyExperts", "%v is outside 0..1", c.VerifyExperts)
	}
	if !(c.VerifyAnswers >= 0 && c.VerifyAnswers <= 1) {
		return bad("VerifyAnswers", "%v is outside 0..1", c.VerifyAnswers)
	}
	return nil
}

// AnnounceShardAuto as Config.AnnounceShardBits lets the peers choose the
// width of announcement shards (experts.ShardBitsAuto).
const AnnounceShardAuto = experts.ShardBitsAuto

// autoShard is the automatic width's policy the config asks for.
func (c *Config) autoShard() experts.AutoShard {
	return experts.AutoShard{SplitAbove: c.AnnounceShardSplit, MergeBelow: c.AnnounceShardMerge,
		Dwell: c.AnnounceShardDwell, Grace: c.AnnounceShardGrace}
}
