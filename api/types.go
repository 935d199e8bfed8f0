package api

import (
	"time"

	"github.com/mwpeer/mwpeer/trust"
)

// Status is the body of GET /api/status.
type Status struct {
	ID             string            `json:"id"`
	Version        string            `json:"version"`
	ListenAddrs    []string          `json:"listen_addrs"`
	AnnouncedAddrs []string          `json:"announced_addrs"`
	Bootstrap      string            `json:"bootstrap"` // the --bootstrap value another machine would use
	Uptime         float64           `json:"uptime_s"`
	Started        time.Time         `json:"started"`
	ConnectedPeers int               `json:"connected_peers"`
	CatalogSize    int               `json:"catalog_size"`
	Reachability   string            `json:"reachability"` // public, private or unknown
	DHTMode        string            `json:"dht_mode"`
	DHTPeers       int               `json:"dht_routing_table"`
	Announce       AnnounceStatus    `json:"announce"`
	Rejected       map[string]uint64 `json:"rejected_announcements"`
	Domains        []string          `json:"domains"`
	Models         []string          `json:"models"`
	Engine         string            `json:"engine"`
	EngineNote     string            `json:"engine_note,omitempty"` // how --engine auto chose, and what to do for real models
	Region         string            `json:"region,omitempty"`
	Location       *Location         `json:"location,omitempty"`
	Connections    []Connection      `json:"connections"`
	Relays         []string          `json:"relay_reservations"`
	HolePunching   bool              `json:"hole_punching"` // DCUtR is ready: this peer knows a public address of its own
	// Generated is what this peer's engine did since start, for its own
	// user and for others: requests finished and tokens (prompt and
	// completion).
	Generated Generated `json:"generated"`
	// CatalogBytes is what the catalog counts its entries as holding
	// (experts.EntryBytes), within CatalogMaxBytes (--catalog-max-bytes).
	CatalogBytes    int64 `json:"catalog_bytes"`
	CatalogMaxBytes int64 `json:"catalog_max_bytes"`
}

// Generated counts an engine's work.
type Generated struct {
	Requests int64 `json:"requests"`
	Tokens   int64 `json:"tokens"`
}

// AnnounceStatus describes this peer's gossip.
type AnnounceStatus struct {
	IntervalS float64 `json:"interval_s"`
	TTLS      float64 `json:"ttl_s"`
	Accepted  uint64  `json:"accepted"`
	// Topic is the announcement topic; with ShardBits > 0 the swarm's
	// announcements are split over 2^ShardBits topics and this peer's
	// catalog holds shard Shard only.
	Topic     string `json:"topic"`
	ShardBits int    `json:"shard_bits,omitempty"`
	Shard     int    `json:"shard,omitempty"`
	// ShardAuto: the width follows the swarm's size (else it is pinned).
	// ShardAuthors is how many authors this peer counts in its shard,
	// itself included, and ShardEstimate the swarm's size it makes of
	// them (ShardAuthors × 2^ShardBits), at the last check.
	ShardAuto     bool `json:"shard_auto"`
	ShardAuthors  int  `json:"shard_authors,omitempty"`
	ShardEstimate int  `json:"shard_estimate,omitempty"`
	// During the grace period after a change of width, PreviousShardBits
	// is the width before, whose topic this peer still uses, for
	// ShardGraceS more seconds.
	PreviousShardBits int     `json:"previous_shard_bits,omitempty"`
	ShardGraceS       float64 `json:"shard_grace_s,omitempty"`
	// ShardChanged is when the width last changed, and ShardReason why.
	ShardChanged time.Time `json:"shard_changed,omitzero"`
	ShardReason  string    `json:"shard_reason,omitempty"`
}

// Connection is one live connection to another peer.
type Connection struct {
	Peer      string `json:"peer"`
	Addr      string `json:"addr"`
	Transport string `json:"transport"` // tcp, quic
	Relayed   bool   `json:"relayed"`
	Direction string `json:"direction"`
}

// Location is a position in decimal degrees.
type Location struct {
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
}

// PeerInfo is one entry of GET /api/peers.
type PeerInfo struct {
	ID        string    `json:"id"`
	Addrs     []string  `json:"addrs"`
	Domains   []string  `json:"domains"`
	Models    []Model   `json:"models"`
	Region    string    `json:"region,omitempty"`
	Location  *Location `json:"location,omitempty"`
	RTTMs     *float64  `json:"rtt_ms"`     // null when nothing is known
	RTTSource string    `json:"rtt_source"` // measured, coordinates, distance or unknown
	Conn      string    `json:"conn"`       // direct, relayed or none
	LastSeen  time.Time `json:"last_seen"`
	Capacity  int       `json:"capacity"`
	Load      int       `json:"load"`
	Version   string    `json:"version,omitempty"` // the mwpeer version it announces (reported)
	// RTT is rtt_ms and rtt_source again as one input, {"ms", "source"};
	// Sources says where every field came from: the RTT is measured by
	// this peer or predicted, everything else is reported by the peer.
	RTT     RTTInput          `json:"rtt"`
	Sources map[string]string `json:"sources"`
	// Trust is this peer's own score of it, from what it did here, with
	// its reasons (null when unknown to the store).
	Trust *trust.Score `json:"trust,omitempty"`
}

// RTTInput is an RTT with its source; Ms is null when nothing is known.
type RTTInput struct {
	Ms     *float64 `json:"ms"`
	Source string   `json:"source"`
}

// Model is a model as /api/peers shows it.
type Model struct {
	Name   string `json:"name"`
	Digest string `json:"digest,omitempty"`
	Engine string `json:"engine,omitempty"`
	// Kernels is the kernel set of its embedded engine as the peer
	// announces it ("avx2", "neon", "generic"; omitted for other engines).
	Kernels string `json:"kernels,omitempty"`
	// Context is its context length in tokens as the peer announces it
	// (omitted: unknown).
	Context int `json:"context,omitempty"`
}

// Peers is the body of GET /api/peers: one page of the catalog, by peer ID.
type Peers struct {
	Peers      []PeerInfo `json:"peers"`
	Total      int        `json:"total"`                 // peers in the catalog
	Offset     int        `json:"offset"`                // of the first on this page
	Limit      int        `json:"limit"`                 // page size asked for (see Page)
	NextOffset *int       `json:"next_offset,omitempty"` // the next page's, when there is one
}

// RTTEntry is one cell of the matrix.
type RTTEntry struct {
	Ms     float64 `json:"ms"`
	Source string  `json:"source"`
}

// RTTMatrix is the body of GET /api/rtt: from -> to -> entry.
type RTTMatrix struct {
	Self  string                         `json:"self"`
	Peers []string                       `json:"peers"`
	RTT   map[string]map[string]RTTEntry `json:"rtt"`
}

// Experts is the body of GET /api/experts: the sharded Mixture-of-Experts
// models this peer knows of and who hosts which of their experts.
//
// Only models whose manifest this peer holds, and so has verified, are
// listed: anyone can announce shards of a model that does not exist.
// Without ?model= each is summed up in counts; with it, the one model named
// comes with its hosts and its replica matrix.
type Experts struct {
	Models     []ShardedModel `json:"models"`
	Total      int            `json:"total"` // verified models (or 1 with ?model= when found)
	Offset     int            `json:"offset"`
	Limit      int            `json:"limit"`
	NextOffset *int           `json:"next_offset,omitempty"`
	// Unverified counts the other models peers announce shards of.
	Unverified int `json:"unverified"`
}

// ShardedModel is one sharded MoE model as the swarm serves it.
type ShardedModel struct {
	ID          string `json:"id"` // SHA-256 of its manifest
	Name        string `json:"name"`
	Layers      int    `json:"layers"`
	Experts     int    `json:"experts"`
	ExpertsUsed int    `json:"experts_used,omitempty"` // 0 when this peer has not the manifest
	// Runners hold the dense shard and answer prompts for the model; Hosts
	// hold experts. The counts are always there; with ?model= the lists
	// too (the first MaxPageSize of each, by peer ID).
	RunnerCount int      `json:"runner_count"`
	HostCount   int      `json:"host_count"`
	Runners     []string `json:"runners,omitempty"`
	// Hosts maps each peer hosting experts to how many it hosts.
	Hosts map[string]int `json:"hosts,omitempty"`
	// Replicas[layer][expert] is the number of live hosts of that expert
	// (with ?model= only).
	Replicas [][]int `json:"replicas,omitempty"`
	// MinReplicas is the smallest entry of Replicas; Missing counts experts
	// with no live host (a prompt that routes to one of them fails).
	MinReplicas int `json:"min_replicas"`
	Missing     int `json:"missing"`
	// Local is what this peer holds and is fetching.
	Local    *LocalShards `json:"local,omitempty"`
	Warnings []string     `json:"warnings,omitempty"`
}

// LocalShards is this peer's part of a sharded model.
type LocalShards struct {
	Dense   bool   `json:"dense"`
	Experts int    `json:"experts"` // expert shards held and served
	Fetch   string `json:"fetch,omitempty"`
	// Served counts the expert calls this peer answered for others, over
	// all its sharded models; the other counters are this model's own
	// generations' expert calls (run here, sent away, failed over).
	Served      uint64 `json:"served"`
	LocalCalls  uint64 `json:"local_calls"`
	RemoteCalls uint64 `json:"remote_calls"`
	Failovers   uint64 `json:"failovers"`
}
