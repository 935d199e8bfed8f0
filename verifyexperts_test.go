package mwpeer

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/inference/moe"
)

// TestVerifyExpertsConfig: 2% of remote expert calls are spot-checked by
// default, and a share outside 0..1 is refused naming the field.
func TestVerifyExpertsConfig(t *testing.T) {
	if got := DefaultConfig().VerifyExperts; got != moe.DefaultVerify {
		t.Fatalf("default VerifyExperts %v, want 0.02", got)
	}
	for _, v := range []float64{-0.01, 1.5, math.NaN()} {
		cfg := testConfig(t)
		cfg.VerifyExperts = v
		var fe *FieldError
		if err := cfg.Validate(); !errors.As(err, &fe) || fe.Field != "VerifyExperts" {
			t.Fatalf("VerifyExperts %v: %v", v, err)
		}
	}
	for _, v := range []float64{0, 0.5, 1} {
		cfg := testConfig(t)
		cfg.VerifyExperts = v
		if err := cfg.Validate(); err != nil {
			t.Fatalf("VerifyExperts %v: %v", v, err)
		}
	}
}

// TestTrustSurvivesARestart: what a peer learnt of others (here, a host it
// caught answering wrongly) is in its data dir when it starts again.
func TestTrustSurvivesARestart(t *testing.T) {
	cfg := testConfig(t)
	start := func() *Peer {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		p, err := Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := start()
	const liar = "12D3KooWLiarLiarLiarLiarLiarLiarLiarLiarLiarLiarLiar"
	p.Router().Trust().Convict(liar, "model", "layer 0 expert 1: outvoted on a spot-check")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p = start()
	defer p.Close()
	sc := p.Router().Trust().Score(liar)
	if sc.Wrong < 0.99 || !sc.IsExcluded(time.Now()) || len(sc.Reasons) == 0 {
		t.Fatalf("after a restart: %+v", sc)
	}
}
