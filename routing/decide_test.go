package routing

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestChooseK(t *testing.T) {
	long := strings.Repeat("please help me with this problem which is quite involved ", 8) // > 400 characters, one sentence
	chatty := "I have a question. It is about my garden. The roses wilt. What do I do?"
	multi := "Write a Python function to compute the integral of a polynomial"
	cases := []struct {
		name            string
		prompt          string
		domains         []DomainScore // nil: Classify(prompt)
		maxK, requested int
		want            int
	}{
		{"short simple", "hello there", nil, 3, 0, 1},
		{"short in one domain", "Write a poem about the sea", nil, 3, 0, 1},
		{"long", long, nil, 3, 0, 2},
		{"several sentences", chatty, nil, 3, 0, 2},
		{"three sentences are not several", "Hi. I need help. Write a poem.", nil, 3, 0, 1},
		{"an ellipsis is one sentence end", "Well... hmm... ok...", nil, 3, 0, 1},
		{"multi-domain", multi, nil, 3, 0, 2},
		{"long and multi-domain", long + multi, nil, 3, 0, 3},
		{"capped by config", long + multi, nil, 2, 0, 2},
		{"config of 1", long + multi, nil, 1, 0, 1},
		{"no config cap means DefaultMaxK", long + multi, nil, 0, 0, 3},
		{"general does not make a second domain", "x", []DomainScore{{General, 1}, {Code, 0.9}}, 3, 0, 1},
		{"a weak second domain does not count", "x", []DomainScore{{Code, 0.9}, {Math, 0.3}}, 3, 0, 1},
		{"forced domains count", "x", []DomainScore{{Code, 1}, {Math, 1}}, 3, 0, 2},
		{"requested wins", "hi", nil, 3, 2, 2},
		{"requested below adaptive", long + multi, nil, 3, 1, 1},
		{"requested capped by config", "hi", nil, 3, 7, 3},
		{"requested with no config cap", "hi", nil, 0, 7, DefaultMaxK},
		{"long in characters, not bytes", strings.Repeat("é", 300), nil, 3, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ds := c.domains
			if ds == nil {
				ds = Classify(c.prompt)
			}
			if got := ChooseK(c.prompt, ds, c.maxK, c.requested); got != c.want {
				t.Fatalf("ChooseK = %d, want %d (domains %v, %d sentences)", got, c.want, ds, sentences(c.prompt))
			}
		})
	}
}

func TestDecide(t *testing.T) {
	cands := []Candidate{
		cand("p1", Code),
		cand("p2", Math),
		cand("p3", Creative),
		with(cand("p1", Code), func(c *Candidate) { c.Model = "other" }),
		cand("p4", General),
	}
	long := strings.Repeat("Something else to consider. ", 20)
	cases := []struct {
		name       string
		prompt     string
		cands      []Candidate
		maxK, k    int
		forced     []string
		wantDomain string
		wantK      int
		wantChosen []string
	}{
		{"code prompt goes to the code peer", "fix my golang build", cands, 3, 0, nil, Code, 1, []string{"p1"}},
		{"requested K takes distinct peers", "fix my golang build", cands, 3, 2, nil, Code, 2, []string{"p1", "p4"}},
		{"multi-domain asks two", "Write a Python function to compute the integral of a polynomial", cands, 3, 0, nil, Math,
			2, []string{"p2", "p1"}},
		{"forced domains override the classifier", "fix my golang build", cands, 3, 1, []string{" Creative "}, Creative, 1,
			[]string{"p3"}},
		{"forced domains are deduplicated", "hi", cands, 3, 0, []string{"math", "MATH", "", "code"}, Math, 2,
			[]string{"p1", "p2"}},
		{"K capped by distinct peers", long + "Write a Python function to compute the integral of a polynomial",
			cands[:1], 3, 0, nil, Math, 1, []string{"p1"}},
		{"no candidates", "hi", nil, 3, 0, nil, General, 0, []string{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decide(c.prompt, c.cands, DefaultWeights(), c.maxK, c.k, c.forced)
			if d.Domains[0].Domain != c.wantDomain {
				t.Errorf("domains %v, want %s first", d.Domains, c.wantDomain)
			}
			if d.K != c.wantK || len(d.Chosen) != c.wantK {
				t.Errorf("K %d with %d chosen, want %d", d.K, len(d.Chosen), c.wantK)
			}
			if len(d.Candidates) != len(c.cands) || d.Candidates == nil || d.Chosen == nil {
				t.Errorf("%d candidates ranked of %d (nil slices: %v %v)", len(d.Candidates), len(c.cands), d.Candidates == nil, d.Chosen == nil)
			}
			var got []string
			for _, s := range d.Chosen {
				got = append(got, s.Peer)
			}
			if strings.Join(got, ",") != strings.Join(c.wantChosen, ",") {
				t.Errorf("chosen %v, want %v; ranking:", got, c.wantChosen)
				for _, s := range d.Candidates {
					t.Logf("  %s %s %.4f %+v", s.Peer, s.Model, s.Score, s.Parts)
				}
			}
		})
	}
}

func TestDecideIsDeterministic(t *testing.T) {
	cands := []Candidate{cand("b", Code), cand("a", Code), cand("c", Code)}
	first := Decide("fix the bug", cands, DefaultWeights(), 3, 2, nil)
	rev := []Candidate{cands[2], cands[1], cands[0]}
	for i := 0; i < 10; i++ {
		if d := Decide("fix the bug", rev, DefaultWeights(), 3, 2, nil); !reflect.DeepEqual(d, first) {
			t.Fatalf("%+v != %+v", d, first)
		}
	}
}

func TestDecisionJSON(t *testing.T) {
	c := with(cand("12D3KooWx", Code), func(c *Candidate) {
		c.RTT, c.RTTKnown, c.TTFT, c.DecodeTPS, c.Load, c.DistanceKm, c.Failures = 1500*time.Microsecond, true, 250*time.Millisecond, 42.5, 1, 12.5, 1
	})
	d := Decide("fix main.go", []Candidate{c}, DefaultWeights(), 3, 0, nil)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"domains", "k", "candidates", "chosen"} {
		if _, ok := m[k]; !ok {
			t.Errorf("decision JSON lacks %q: %s", k, b)
		}
	}
	cj := m["candidates"].([]any)[0].(map[string]any)
	want := map[string]any{"peer": "12D3KooWx", "local": false, "model": "m", "rtt_ms": 1.5, "rtt_known": true, "ttft_ms": 250.0,
		"decode_tps": 42.5, "capacity": 2.0, "load": 1.0, "distance_km": 12.5, "failures": 1.0}
	for k, v := range want {
		if cj[k] != v {
			t.Errorf("candidate JSON %s = %v, want %v (%s)", k, cj[k], v, b)
		}
	}
	for _, k := range []string{"score", "parts", "domains"} {
		if _, ok := cj[k]; !ok {
			t.Errorf("candidate JSON lacks %q", k)
		}
	}
	parts := cj["parts"].(map[string]any)
	for _, k := range []string{"relevance", "speed", "capacity", "load", "distance", "failures"} {
		if _, ok := parts[k]; !ok {
			t.Errorf("parts JSON lacks %q", k)
		}
	}
	for k := range cj {
		if strings.ToLower(k) != k {
			t.Errorf("key %q is not snake_case", k)
		}
	}

	var back Decision
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, d) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, d)
	}
}
