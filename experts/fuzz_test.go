package experts

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/mwpeer/mwpeer/internal/fuzzcorpus"
	"github.com/mwpeer/mwpeer/membership"
)

// fuzzNow is the clock of the fuzz targets, so that seeds stay fresh.
var fuzzNow = time.UnixMilli(1_780_000_000_000)

// fuzzKey is a fixed author key, so that a seed's payload names its signer.
func fuzzKey(tb testing.TB) (crypto.PrivKey, string) {
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	if err != nil {
		tb.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id.String()
}

// fuzzAnnouncements are valid announcements of every kind: full, with
// shards, a certificate and a coordinate, a beat, a leave.
func fuzzAnnouncements(tb testing.TB) []Announcement {
	_, id := fuzzKey(tb)
	pid, _ := peer.Decode(id)
	op := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	cert, err := membership.Issue(op, pid, fuzzNow.Add(-time.Hour), fuzzNow.Add(time.Hour))
	if err != nil {
		tb.Fatal(err)
	}
	full := sample(id, fuzzNow)
	rich := sample(id, fuzzNow)
	rich.Seq, rich.Version, rich.Cert = 8, "v0.9.0", cert
	rich.Coord = &coordinate.Coordinate{Vec: []float64{0.001, -0.002}, Error: 0.5, Height: 1e-5}
	sh := NewShardSummary("a3f1c0de00000000000000000000000000000000000000000000000000000000"[:64], "mix", 2, 4)
	sh.Held[0] = 0b1010_0101
	rich.Shards = []ShardSummary{sh}
	rich.Models = append(rich.Models, Model{Name: "mix", Engine: "embedded", Context: 4096, Size: 1 << 20})
	rich.ShardBits = 3
	beat := Announcement{Peer: id, Seq: 9, Time: fuzzNow.UnixMilli(), Interval: 5000, Beat: true, State: 8, Load: 3, ShardBits: MaxAnnounceShardBits}
	leave := Announcement{Peer: id, Seq: 10, Time: fuzzNow.UnixMilli(), Interval: 5000, Leave: true}
	// An interval that overflows to 5 s when taken for milliseconds.
	wrapped := sample(id, fuzzNow)
	wrapped.Interval = 5000 + 1<<58
	return []Announcement{full, rich, beat, leave, wrapped}
}

// checkOpened asserts what Open promises of an announcement it accepted or
// a rejection it returned, and that the catalog takes it without harm.
func checkOpened(t *testing.T, a *Announcement, err error, env []byte) {
	if err != nil {
		if !slices.Contains(RejectReasons, ReasonOf(err)) {
			t.Fatalf("error %v is not a RejectError with a known reason", err)
		}
		return
	}
	if len(env) > MaxAnnouncementSize {
		t.Fatalf("accepted an envelope of %d bytes", len(env))
	}
	if iv := time.Duration(a.Interval) * time.Millisecond; a.Interval < MinInterval.Milliseconds() || a.Interval > MaxInterval.Milliseconds() || iv < MinInterval {
		t.Fatalf("accepted an interval of %d ms", a.Interval)
	}
	if a.ShardBits < 0 || a.ShardBits > MaxAnnounceShardBits {
		t.Fatalf("accepted a shard width of %d", a.ShardBits)
	}
	if a.Seq == 0 || len(a.Addrs) > MaxAddrs || len(a.Models) > MaxModels || len(a.RTT) > MaxRTTRow || len(a.Shards) > MaxShardModels {
		t.Fatalf("accepted an announcement over a limit: %+v", a)
	}
	if ttl := a.TTL(); ttl <= 0 || ttl > TTL(MaxInterval) {
		t.Fatalf("TTL %s", ttl)
	}
	for _, ms := range a.RTT {
		if math.IsNaN(ms) || ms < 0 {
			t.Fatalf("accepted RTT %v", ms)
		}
	}
	// What was accepted encodes and decodes to itself.
	b, err := a.MarshalRecord()
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	var back Announcement
	if err := back.UnmarshalRecord(b); err != nil {
		t.Fatalf("decode what was re-encoded: %v", err)
	}
	if !reflect.DeepEqual(&back, a) {
		t.Fatalf("round trip changed the announcement:\n%+v\n%+v", a, &back)
	}
	// The catalog takes it (twice: the second is a repeat), and what it
	// holds keeps its limits.
	c := NewCatalog("self", 8)
	c.Apply(a, env, fuzzNow)
	c.Apply(a, env, fuzzNow)
	c.Expire(fuzzNow.Add(time.Hour))
}

// FuzzOpen opens signed announcement envelopes as they come from gossip or
// a catch-up: any bytes give an announcement within every limit or a
// RejectError.
func FuzzOpen(f *testing.F) {
	key, _ := fuzzKey(f)
	for _, a := range fuzzAnnouncements(f) {
		env, err := Seal(&a, key)
		if err != nil {
			f.Fatal(err)
		}
		fuzzcorpus.Add(f, env, false)
		fuzzcorpus.Add(f, env, true)
	}
	fuzzcorpus.Add(f, []byte("hello"), false)
	fuzzcorpus.Add(f, []byte{}, true)
	f.Fuzz(func(t *testing.T, env []byte, relayed bool) {
		open := Open
		if relayed {
			open = OpenRelayed
		}
		a, err := open(env, fuzzNow)
		checkOpened(t, a, err, env)
	})
}

// FuzzAnnouncement signs any payload with the author's key and opens it, so
// that the fuzzer reaches the checks behind the signature: every limit,
// beats, leaves, shard summaries, coordinates and certificates.
func FuzzAnnouncement(f *testing.F) {
	key, id := fuzzKey(f)
	for _, a := range fuzzAnnouncements(f) {
		b, err := json.Marshal(&a)
		if err != nil {
			f.Fatal(err)
		}
		fuzzcorpus.Add(f, b, false)
	}
	fuzzcorpus.Add(f, []byte(`{"peer":"`+id+`","seq":1,"time_ms":1780000000000,"interval_ms":1000,"location":{"lat":91}}`), false)
	fuzzcorpus.Add(f, []byte(`{"peer":"`+id+`","seq":1,"time_ms":1780000000000,"interval_ms":1000,"coord":{"vec":[1e308,1e308],"error":1,"height":0}}`), true)
	fuzzcorpus.Add(f, []byte(`{"peer":"`+id+`","seq":1,"time_ms":1780000000000,"interval_ms":1000,"shard_bits":17}`), false)
	fuzzcorpus.Add(f, []byte(`{"peer":"`+id+`","seq":2,"time_ms":1780000000000,"interval_ms":1000,"beat":true,"state":1,"shard_bits":-1}`), true)
	fuzzcorpus.Add(f, []byte(`{"peer":"`+id+`","seq":1,"time_ms":-9223372036854775808,"interval_ms":9223372036854775807}`), true)
	f.Fuzz(func(t *testing.T, payload []byte, relayed bool) {
		if len(payload) > MaxAnnouncementSize {
			return
		}
		env, err := sealRaw(key, payload)
		if err != nil {
			return
		}
		open := Open
		if relayed {
			open = OpenRelayed
		}
		a, err := open(env, fuzzNow)
		checkOpened(t, a, err, env)
	})
}

// rawRecord is a record whose payload is given as bytes.
type rawRecord []byte

func (r rawRecord) Domain() string                 { return envelopeDomain }
func (r rawRecord) Codec() []byte                  { return envelopeCodec }
func (r rawRecord) MarshalRecord() ([]byte, error) { return r, nil }
func (r rawRecord) UnmarshalRecord([]byte) error   { return nil }

func sealRaw(key crypto.PrivKey, payload []byte) ([]byte, error) {
	env, err := record.Seal(rawRecord(payload), key)
	if err != nil {
		return nil, err
	}
	return env.Marshal()
}
