package sharding

import (
	"fmt"
	"strconv"
	"strings"
)

// HostSpec asks a peer to hold part of a sharded MoE model, fetching from the
// swarm what it lacks. Written MODEL (every shard), MODEL@dense (the dense
// shard: the peer runs the model), or MODEL@LAYERS:EXPERTS where each of
// LAYERS and EXPERTS is * or a list of numbers and ranges ("0-15",
// "2,5", "0-3,8"). MODEL is a model ID, a prefix of one of at least 8 hex
// digits, or a model name the swarm announces. Only the ID is trusted: a
// fetch is pinned to one (the manifest must hash to it), a name or prefix
// is resolved once, from the store and from announcements anyone may send,
// and refused when more than one ID answers to it.
type HostSpec struct {
	Model   string
	Dense   bool
	Layers  []int // nil: all (when AllLayers)
	Experts []int
	// AllLayers and AllExperts stand for *.
	AllLayers, AllExperts bool
}

// String writes the spec back in flag syntax.
func (s HostSpec) String() string {
	if s.Dense && s.AllLayers && s.AllExperts {
		return s.Model
	}
	if s.Dense {
		return s.Model + "@dense"
	}
	return s.Model + "@" + list(s.Layers, s.AllLayers) + ":" + list(s.Experts, s.AllExperts)
}

func list(xs []int, all bool) string {
	if all {
		return "*"
	}
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ",")
}

// Wants reports whether the spec asks for expert (layer, expert).
func (s HostSpec) Wants(layer, expert int) bool {
	return (s.AllLayers || contains(s.Layers, layer)) && (s.AllExperts || contains(s.Experts, expert))
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// ParseHostSpecs parses specs separated by ";" (empty parts are skipped).
func ParseHostSpecs(v string) ([]HostSpec, error) {
	var out []HostSpec
	for _, part := range strings.Split(v, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		s, err := parseHostSpec(part)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func parseHostSpec(v string) (HostSpec, error) {
	model, rest, hasAt := strings.Cut(v, "@")
	if model == "" || len(model) > 256 || strings.ContainsAny(model, " :,") {
		return HostSpec{}, fmt.Errorf("%q: want MODEL, MODEL@dense or MODEL@LAYERS:EXPERTS", v)
	}
	s := HostSpec{Model: model}
	switch {
	case !hasAt:
		s.Dense, s.AllLayers, s.AllExperts = true, true, true
		return s, nil
	case rest == "dense":
		s.Dense = true
		return s, nil
	}
	ls, es, ok := strings.Cut(rest, ":")
	if !ok {
		return HostSpec{}, fmt.Errorf("%q: want MODEL@LAYERS:EXPERTS, e.g. %s@0-15:2,5", v, model)
	}
	var err error
	if s.Layers, s.AllLayers, err = parseRanges(ls); err != nil {
		return HostSpec{}, fmt.Errorf("%q: layers: %w", v, err)
	}
	if s.Experts, s.AllExperts, err = parseRanges(es); err != nil {
		return HostSpec{}, fmt.Errorf("%q: experts: %w", v, err)
	}
	return s, nil
}

// maxIndex bounds layer and expert numbers in a spec.
const maxIndex = 4096

func parseRanges(v string) ([]int, bool, error) {
	if v == "*" {
		return nil, true, nil
	}
	var out []int
	for _, r := range strings.Split(v, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 || a >= maxIndex {
			return nil, false, fmt.Errorf("bad number %q", lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b >= maxIndex {
				return nil, false, fmt.Errorf("bad range %q", r)
			}
		}
		for i := a; i <= b; i++ {
			if !contains(out, i) {
				out = append(out, i)
			}
		}
	}
	return out, false, nil
}
