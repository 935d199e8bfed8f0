package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestSoak runs the chaos swarm (10 `mwpeer run` processes: 4 entries, 6
// synthetic experts) at a moderate load (3 clients) for MWPEER_SOAK (a
// duration; "1" means the default of 30 minutes; unset skips the test, so
// CI never runs it) and logs, for every peer, the slope of its resident
// memory, goroutines and open files over the run, after a warm-up of a
// tenth of it: a leak shows as a slope that stays positive.
//
//	MWPEER_SOAK=30m go test ./cmd/mwpeer -run TestSoak -v -timeout 40m
func TestSoak(t *testing.T) {
	v := os.Getenv("MWPEER_SOAK")
	if v == "" {
		t.Skip("set MWPEER_SOAK to a duration (1: 30m) to soak a 10-process swarm")
	}
	length := 30 * time.Minute
	if v != "1" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		length = d
	}
	every := max(5*time.Second, length/120)
	s := startChaosSwarm(t, 4, 6)
	l := newLoad(s.entries, 8)
	l.learn(t)
	l.setPhase("soak")
	ctx, cancel := context.WithTimeout(context.Background(), length)
	defer cancel()
	done := l.run(ctx, 3)

	procs := s.all()
	series := make([][]point, len(procs))
	start := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for ctx.Err() == nil {
		at := time.Since(start)
		gor := metricAll(procs, "go_goroutines")
		for i, p := range procs {
			series[i] = append(series[i], point{at: at, rss: rssMB(p.cmd.Process.Pid), goroutines: gor[i], files: openFiles(p.cmd.Process.Pid)})
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	done()

	warm := length / 10
	var b strings.Builder
	fmt.Fprintf(&b, "soak of %v (%d samples a peer, every %v; slopes after a %v warm-up, per hour):\n", length, len(series[0]), every, warm)
	fmt.Fprintf(&b, "%-8s %-6s %31s %26s %20s\n", "peer", "role", "RSS MB (start→end, /h, 2nd half)", "goroutines (start→end, /h)", "open files (/h)")
	var sum [4]float64
	for i, p := range procs {
		role := "expert"
		if i < len(s.entries) {
			role = "entry"
		}
		pts := after(series[i], warm)
		rss := func(x point) float64 { return x.rss }
		rs, gs, fs := slope(pts, rss), slope(pts, func(x point) float64 { return x.goroutines }), slope(pts, func(x point) float64 { return x.files })
		// A heap still growing towards its steady state slows down; a
		// leak does not.
		late := slope(after(series[i], warm+(length-warm)/2), rss)
		sum[0], sum[1], sum[2], sum[3] = sum[0]+rs, sum[1]+gs, sum[2]+fs, sum[3]+late
		first, last := pts[0], pts[len(pts)-1]
		fmt.Fprintf(&b, "%-8s %-6s %6.1f→%6.1f %+7.2f %+7.2f %8.0f→%6.0f %+8.1f %5.0f→%4.0f %+7.1f\n", short(p.id), role,
			first.rss, last.rss, rs, late, first.goroutines, last.goroutines, gs, first.files, last.files, fs)
	}
	n := float64(len(procs))
	fmt.Fprintf(&b, "mean slope per peer: RSS %+.2f MB/h (second half %+.2f MB/h), goroutines %+.1f/h, open files %+.1f/h\n",
		sum[0]/n, sum[3]/n, sum[1]/n, sum[2]/n)
	st := l.stats("soak")
	fmt.Fprintf(&b, "load: %v", st)
	t.Log(b.String())
	for _, err := range st.errs {
		t.Log(err)
	}
	if st.failed > 0 {
		t.Errorf("%d of %d requests failed", st.failed, st.n)
	}
}

// point is one sample of one process.
type point struct {
	at                     time.Duration
	rss, goroutines, files float64
}

func after(pts []point, warm time.Duration) []point {
	for i, p := range pts {
		if p.at >= warm && len(pts)-i >= 2 {
			return pts[i:]
		}
	}
	return pts
}

// slope is the least-squares slope of f over pts, per hour.
func slope(pts []point, f func(point) float64) float64 {
	var n, sx, sy, sxx, sxy float64
	for _, p := range pts {
		x, y := p.at.Hours(), f(p)
		n++
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	den := n*sxx - sx*sx
	if n < 2 || den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}

// openFiles is how many file descriptors a process has open (from /proc).
func openFiles(pid int) float64 {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return float64(len(fds))
}
