package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/internal/scale"
)

// TestManyProcesses is the largest real swarm this machine holds: N `mwpeer
// run` processes on loopback (MWPEER_SCALE_PROCS=N, skipped when unset),
// announcing at MWPEER_SCALE_INTERVAL at least (default 30s) so N of them
// fit on two cores. It reports how long the last one to start takes until
// every catalog holds 95% and all of the others, the gossip bytes each
// receives per second (mwpeer_gossip_received_bytes_total over a minute),
// and what the scale model (internal/scale) predicts for the same swarm.
//
//	MWPEER_SCALE_PROCS=80 go test ./cmd/mwpeer -run TestManyProcesses -v -timeout 30m
//
// On this 2-core machine an idle process costs about 2% of a core, so about
// 90 fit: 150 started (in 13 minutes, every catalog complete by then) but
// left the machine at a load of 400, too slow to be measured. A -timeout
// that fires leaves the processes running (cleanup does not run).
func TestManyProcesses(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MWPEER_SCALE_PROCS"))
	if n < 2 {
		t.Skip("set MWPEER_SCALE_PROCS to the number of processes to run")
	}
	interval := 30 * time.Second
	if v := os.Getenv("MWPEER_SCALE_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		interval = d
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	extra := []string{"--announce-interval", interval.String(), "--log-level", "warn"}
	procs := make([]*proc, 0, n)
	began := time.Now()
	for i := range n {
		boot := ""
		if i > 0 {
			boot = procs[rand.IntN(len(procs))].boot
		}
		procs = append(procs, startProc(t, bin, filepath.Join(dir, strconv.Itoa(i)), "general", boot, extra...))
	}
	started := time.Now()
	t.Logf("%d processes started in %v", n, started.Sub(began).Round(time.Second))

	// Time to full view: every catalog holds 95%, then all, of the others.
	var at95, atAll time.Duration
	for atAll == 0 && time.Since(started) < 10*time.Minute {
		least := int(slices.Min(metricAll(procs, "mwpeer_catalog_peers")))
		if at95 == 0 && least >= (n-1)*95/100 {
			at95 = time.Since(started)
		}
		if least >= n-1 {
			atAll = time.Since(started)
		}
		if atAll == 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	t.Logf("every catalog holds 95%% of the others %v after the last start, all of them %v", at95.Round(100*time.Millisecond), atAll.Round(100*time.Millisecond))

	// Gossip received per peer over a minute, after join traffic passed.
	time.Sleep(interval)
	window := time.Minute
	before := metricAll(procs, "mwpeer_gossip_received_bytes_total")
	time.Sleep(window)
	var rates []float64
	var sum float64
	for i, v := range metricAll(procs, "mwpeer_gossip_received_bytes_total") {
		r := (v - before[i]) / window.Seconds()
		rates = append(rates, r)
		sum += r
	}
	slices.Sort(rates)
	var rss float64
	for _, p := range procs {
		rss += rssMB(p.cmd.Process.Pid)
	}
	iv := metric(procs[0].http, "mwpeer_announce_interval_seconds")
	t.Logf("gossip received per peer: mean %.1f KB/s, p50 %.1f, max %.1f; interval %.0f s; RSS mean %.0f MB",
		sum/float64(n)/1e3, rates[n/2]/1e3, rates[n-1]/1e3, iv, rss/float64(n))

	s, err := scale.MeasureSizes()
	if err != nil {
		t.Fatal(err)
	}
	p := scale.DefaultParams(s, 0, 0, 0, 0) // the catalog's sizes play no part in gossip
	p.MinInterval = interval
	m := p.Model(n, 0)
	t.Logf("model for %d peers at %v: %.1f KB/s (%+.0f%% vs measured mean)", n, m.Interval, m.Gossip/1e3, 100*(m.Gossip/(sum/float64(n))-1))
}

// metricAll reads a metric from every process, 16 at a time: one by one
// takes minutes on a loaded machine.
func metricAll(procs []*proc, name string) []float64 {
	out := make([]float64, len(procs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, p := range procs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			out[i] = metric(p.http, name)
			<-sem
		}()
	}
	wg.Wait()
	return out
}

// metric reads one unlabelled value from a process's /metrics (-1 on error).
func metric(addr, name string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// rssMB is a process's resident set from /proc.
func rssMB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1e3
		}
	}
	return 0
}
