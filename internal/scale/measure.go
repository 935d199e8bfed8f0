package scale

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/serf/coordinate"
	kadpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/geo"
)

// Sizes are bytes on the wire, measured from real encodings.
type Sizes struct {
	Full, Beat int // signed envelopes of a typical full announcement and a beat
	// MessageOverhead is what GossipSub adds to one published envelope: the
	// RPC and Message framing, author, seqno, topic and signature.
	MessageOverhead int
	// IHaveID is one message ID in an IHAVE (the default ID, author and
	// seqno, with its protobuf framing); IHaveOverhead is the rest of an
	// RPC carrying one IHAVE.
	IHaveID, IHaveOverhead int
	// IDontWant is one RPC carrying an IDONTWANT for one message.
	IDontWant int
	// CatchUpFrame is the framing of one envelope in a catch-up reply.
	CatchUpFrame int
	// OpenFull and OpenBeat are the CPU time to verify and decode one.
	OpenFull, OpenBeat time.Duration
	// ProviderRecord is one provider in a kad-dht GET_PROVIDERS answer (a
	// peer ID and the typical announcement's three addresses);
	// ProviderAnswerBase the rest of an answer: its key and the k closest
	// peers the holder knows, with its length prefix.
	ProviderRecord, ProviderAnswerBase int
}

// typical is a full announcement as a serving peer sends it: three
// addresses, two models with digests, two domains, hardware, a location, a
// full row of RTTs and a Vivaldi coordinate; no shards, no certificate.
func typical(id peer.ID, others []peer.ID) experts.Announcement {
	digest := "sha256:" + fmt.Sprintf("%064x", 0xabcdef)
	a := experts.Announcement{
		Peer: id.String(), Seq: uint64(time.Now().UnixNano()), Time: time.Now().UnixMilli(), Interval: 60000,
		Addrs: []string{"/ip4/203.0.113.7/tcp/4001", "/ip4/203.0.113.7/udp/4001/quic-v1",
			"/ip6/2001:db8::7/udp/4001/quic-v1"},
		Models: []experts.Model{
			{Name: "llama3.2:3b", Digest: digest, Size: 2019393189, Family: "llama", Engine: "ollama"},
			{Name: "qwen2.5-coder:7b", Digest: digest, Size: 4683087332, Family: "qwen2", Engine: "ollama"},
		},
		Domains:  []string{"general", "code"},
		Hardware: experts.Hardware{CPUs: 8, MemoryMB: 32768, GPU: "NVIDIA GeForce RTX 4070", OS: "linux", Arch: "amd64"},
		Capacity: 4, Load: 1,
		Location: &geo.Point{Lat: 48.8566, Lon: 2.3522},
		Region:   "eu-west",
		RTT:      map[string]float64{},
		Coord:    coordinate.NewCoordinate(coordinate.DefaultConfig()),
	}
	for i, o := range others {
		if i == experts.MaxRTTRow {
			break
		}
		a.RTT[o.String()] = 12.5 + float64(i)*7.25
	}
	return a
}

func newKey() (crypto.PrivKey, peer.ID, error) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	id, err := peer.IDFromPrivateKey(k)
	return k, id, err
}

// sealPair seals a typical full announcement of a fresh key and the beat
// after it.
func sealPair(others []peer.ID) (full, beat []byte, id peer.ID, err error) {
	k, id, err := newKey()
	if err != nil {
		return nil, nil, "", err
	}
	a := typical(id, others)
	if full, err = experts.Seal(&a, k); err != nil {
		return nil, nil, "", err
	}
	b := experts.Announcement{Peer: a.Peer, Seq: a.Seq + 1, Time: a.Time, Interval: a.Interval,
		Beat: true, State: a.Seq, Load: 2}
	if beat, err = experts.Seal(&b, k); err != nil {
		return nil, nil, "", err
	}
	return full, beat, id, nil
}

func rpcSize(r *pb.RPC) int {
	n := r.Size()
	return n + uvarintLen(uint64(n)) // GossipSub's length-delimited writer
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// MeasureSizes seals real announcements and sizes the GossipSub protobufs
// that carry them.
func MeasureSizes() (Sizes, error) {
	var others []peer.ID
	for range experts.MaxRTTRow {
		_, id, err := newKey()
		if err != nil {
			return Sizes{}, err
		}
		others = append(others, id)
	}
	full, beat, id, err := sealPair(others)
	if err != nil {
		return Sizes{}, err
	}
	s := Sizes{Full: len(full), Beat: len(beat)}
	topic := experts.Topic
	seqno := make([]byte, 8)
	msg := &pb.Message{From: []byte(id), Data: beat, Seqno: seqno, Topic: &topic, Signature: make([]byte, 64)}
	s.MessageOverhead = rpcSize(&pb.RPC{Publish: []*pb.Message{msg}}) - len(beat)
	mid := pubsub.DefaultMsgIdFn(msg)
	ihave := func(n int) int {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = mid
		}
		return rpcSize(&pb.RPC{Control: &pb.ControlMessage{Ihave: []*pb.ControlIHave{{TopicID: &topic, MessageIDs: ids}}}})
	}
	s.IHaveID = ihave(101) - ihave(100)
	s.IHaveOverhead = ihave(1) - s.IHaveID
	s.IDontWant = rpcSize(&pb.RPC{Control: &pb.ControlMessage{Idontwant: []*pb.ControlIDontWant{{MessageIDs: []string{mid}}}}})
	s.CatchUpFrame = uvarintLen(uint64(len(full)))

	if s.ProviderRecord, s.ProviderAnswerBase, err = providerAnswer(id); err != nil {
		return Sizes{}, err
	}
	if s.OpenFull, err = timeOpen(full); err != nil {
		return Sizes{}, fmt.Errorf("open full: %w", err)
	}
	if s.OpenBeat, err = timeOpen(beat); err != nil {
		return Sizes{}, fmt.Errorf("open beat: %w", err)
	}
	return s, nil
}

// providerAnswer sizes kad-dht's answer to GET_PROVIDERS (handleGetProviders:
// every provider record the holder has, then the k = 20 peers closest to
// the key it knows) as its protobuf encodes it: the bytes one provider
// adds, and those of an answer with none.
func providerAnswer(id peer.ID) (record, base int, err error) {
	ai := peer.AddrInfo{ID: id}
	for _, s := range typical(id, nil).Addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return 0, 0, err
		}
		ai.Addrs = append(ai.Addrs, a)
	}
	key := experts.SaltedKey(experts.KindDomain, "general", 9, 511).Hash()
	size := func(providers int) int {
		m := &kadpb.Message{Type: kadpb.Message_GET_PROVIDERS, Key: key,
			CloserPeers:   kadpb.RawPeerInfosToPBPeers(slices.Repeat([]peer.AddrInfo{ai}, 20)),
			ProviderPeers: kadpb.RawPeerInfosToPBPeers(slices.Repeat([]peer.AddrInfo{ai}, providers))}
		n := proto.Size(m)
		return n + uvarintLen(uint64(n)) // msgio's varint length prefix
	}
	return size(101) - size(100), size(0), nil
}

// timeOpen is how long verifying and decoding env takes: the fastest of 10
// batches of 20, since a loaded machine only ever slows a batch (at a
// load of 15 on 2 cores the mean of 200 made the model's catch-up of 50
// peers take 181 ms, against the 33 ms measured join it is part of).
func timeOpen(env []byte) (time.Duration, error) {
	const batches, per = 10, 20
	best := time.Duration(math.MaxInt64)
	for range batches {
		start := time.Now()
		for range per {
			if _, err := experts.OpenRelayed(env, time.Now()); err != nil {
				return 0, err
			}
		}
		best = min(best, time.Since(start)/per)
	}
	return best, nil
}

// MeasureCatalog fills a real catalog with n peers (a full announcement
// and a beat each, typical or, with largest, grown to near the 32 KiB cap, decoded as gossip decodes them, every peer in its own /24
// so no prefix cap applies) and returns the heap bytes it retains per entry,
// from runtime.MemStats: everything made on the way (keys, signatures,
// decoding garbage) is collected before the second reading, so what remains
// is what the catalog holds. counted is what the catalog counts an entry as
// holding against its byte budget (experts.EntryBytes), on average.
func MeasureCatalog(n int, largest bool) (heap, counted float64, err error) {
	var others []peer.ID
	for range experts.MaxRTTRow {
		_, id, err := newKey()
		if err != nil {
			return 0, 0, err
		}
		others = append(others, id)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := experts.NewCatalog("self", n+1)
	c.SetMaxBytes(1 << 40) // measure the entries, not the budget
	for i := range n {
		k, id, err := newKey()
		if err != nil {
			return 0, 0, err
		}
		a := typical(id, others)
		a.Addrs[0] = fmt.Sprintf("/ip4/%d.%d.%d.7/tcp/4001", 11+i>>16, (i>>8)&255, i&255)
		if largest {
			grow(&a)
		}
		full, err := experts.Seal(&a, k)
		if err != nil {
			return 0, 0, err
		}
		b := experts.Announcement{Peer: a.Peer, Seq: a.Seq + 1, Time: a.Time, Interval: a.Interval, Beat: true, State: a.Seq, Load: 2}
		beat, err := experts.Seal(&b, k)
		if err != nil {
			return 0, 0, err
		}
		for _, env := range [][]byte{full, beat} {
			now := time.Now() // a loaded machine may take longer than a TTL
			got, err := experts.OpenRelayed(env, now)
			if err != nil {
				return 0, 0, err
			}
			c.Apply(got, env, now)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if c.Len() != n {
		return 0, 0, fmt.Errorf("catalog took %d of %d", c.Len(), n)
	}
	held, _ := c.Bytes()
	runtime.KeepAlive(c)
	return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n), float64(held) / float64(n), nil
}

// grow adds models with long names to a until its envelope would pass
// 30 KiB: the largest announcement gossip accepts, give or take a model.
func grow(a *experts.Announcement) {
	name := strings.Repeat("m", experts.MaxString-8)
	for len(a.Models) < experts.MaxModels {
		b, _ := json.Marshal(a)
		if len(b) > 30<<10 {
			return
		}
		a.Models = append(a.Models, experts.Model{Name: fmt.Sprintf("%s-%d", name, len(a.Models)),
			Digest: a.Models[0].Digest, Size: 1 << 32, Family: name[:64], Engine: "ollama"})
	}
}
