package sharding

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/mwpeer/mwpeer/experts"
	"github.com/mwpeer/mwpeer/experts/shard"
)

// announced is a catalog of announcements, each a peer's shard summaries.
type announced []experts.Entry

func (a *announced) Select(keep func(*experts.Entry) bool) []experts.Entry {
	var out []experts.Entry
	for i := range *a {
		if keep(&(*a)[i]) {
			out = append(out, (*a)[i])
		}
	}
	return out
}

// announce adds a stranger announcing model id under name.
func (a *announced) announce(t *testing.T, id, name string) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := peer.IDFromPrivateKey(k)
	e := experts.Entry{}
	e.Peer = pid.String()
	e.Shards = []experts.ShardSummary{experts.NewShardSummary(id, name, 2, 4)}
	*a = append(*a, e)
	return pid
}

func TestHostSpecNamesArePinnedToOneModelID(t *testing.T) {
	store, err := shard.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var cat announced
	s := &Sharding{store: store, cfg: Config{Catalog: &cat}, log: slog.Default(), pinned: map[string]string{}}
	idA, idB := strings.Repeat("a", 64), strings.Repeat("b", 64)

	if _, err := s.resolve("mixtral"); !errors.Is(err, errNotHeard) {
		t.Fatalf("a name nobody announces: %v", err)
	}
	// One announcement: the name resolves, and stays pinned.
	cat.announce(t, idA, "mixtral")
	if id, err := s.resolve("mixtral"); err != nil || id != idA {
		t.Fatalf("mixtral = %s, %v", id, err)
	}
	// A stranger later announces another model under the same name: the
	// pinned spec is not redirected.
	cat.announce(t, idB, "mixtral")
	if id, err := s.resolve("mixtral"); err != nil || id != idA {
		t.Fatalf("pinned mixtral = %s, %v", id, err)
	}
	// A fresh spec naming it now is refused, with both IDs listed.
	s.pinned = map[string]string{}
	_, err = s.resolve("mixtral")
	if !errors.Is(err, errAmbiguous) || !strings.Contains(err.Error(), idA) || !strings.Contains(err.Error(), idB) {
		t.Fatalf("a name two IDs answer to: %v", err)
	}
	t.Log(err)
	// So is a prefix two IDs share.
	cat.announce(t, idA[:60]+"cccc", "other")
	if _, err := s.resolve(idA[:8]); !errors.Is(err, errAmbiguous) {
		t.Fatalf("a shared prefix: %v", err)
	}
	// An ID is taken as it is, whatever names are announced.
	for _, id := range []string{idA, idB, strings.Repeat("d", 64)} {
		if got, err := s.resolve(id); err != nil || got != id {
			t.Fatalf("ID %s = %s, %v", id[:8], got, err)
		}
	}
	// A prefix only one ID has resolves to it.
	if id, err := s.resolve(idB[:8]); err != nil || id != idB {
		t.Fatalf("prefix %s = %s, %v", idB[:8], id, err)
	}
}
