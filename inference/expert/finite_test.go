package expert

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

// poisoned is an expert that computes honestly, then puts bad into one
// value of its answer.
type poisoned struct {
	Engine
	bad      float32
	row, col int
}

func (p poisoned) Apply(in, out [][]float32) error {
	if err := p.Engine.Apply(in, out); err != nil {
		return err
	}
	out[min(p.row, len(out)-1)][p.col] = p.bad
	return nil
}

// TestNonFiniteAnswersAreRejected: an answer holding a NaN or an infinity
// anywhere fails with ErrNotFinite, is not counted as work done, and the
// client's next call is answered normally.
func TestNonFiniteAnswersAreRejected(t *testing.T) {
	c := moeConfig()
	m := loadModel(t, c)
	s := newSwarm(t, m, 1, func(l, e int) []int { return []int{0} })
	cl := NewClient(s.req)
	defer cl.Close()
	p := s.hosts[0].ID()
	honest, _ := m.Expert(0, 0)
	rows := func(n int) [][]float32 {
		r := make([][]float32, n)
		for i := range r {
			r[i] = make([]float32, c.Embedding)
			for j := range r[i] {
				r[i][j] = float32(i+j) / 100
			}
		}
		return r
	}
	for _, tc := range []struct {
		name     string
		bad      float32
		row, col int
	}{
		{"NaN first", float32(math.NaN()), 0, 0},
		{"+Inf last", float32(math.Inf(1)), 3, c.Embedding - 1},
		{"-Inf middle", float32(math.Inf(-1)), 2, c.Embedding / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.servers[0].Add(testModel, 0, 0, poisoned{honest, tc.bad, tc.row, tc.col})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			calls := cl.Calls.Load()
			err := cl.Call(ctx, p, testModel, 0, 0, rows(4), rows(4))
			if !errors.Is(err, ErrNotFinite) {
				t.Fatalf("err %v, want ErrNotFinite", err)
			}
			if cl.Calls.Load() != calls {
				t.Fatal("a rejected answer was counted")
			}
			if w, _, _ := cl.Meter.Take(p, testModel.String()); w.Calls != 0 {
				t.Fatalf("a rejected answer was metered for payment: %+v", w)
			}
			s.servers[0].Add(testModel, 0, 0, honest)
			out := rows(4)
			if err := cl.Call(ctx, p, testModel, 0, 0, rows(4), out); err != nil {
				t.Fatalf("the next call: %v", err)
			}
			if err := finite(out); err != nil {
				t.Fatal(err)
			}
			cl.Meter.Take(p, testModel.String())
		})
	}
}
