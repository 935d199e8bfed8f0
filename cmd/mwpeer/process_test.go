package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/internal/wait"
)

// proc is one `mwpeer run` process.
type proc struct {
	cmd     *exec.Cmd
	id      string
	boot    string
	http    string
	dataDir string
	domain  string
	stderr  *os.File
	done    chan error
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mwpeer")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startProc starts `mwpeer run`; extra flags come after the defaults here,
// so they override them.
func startProc(t *testing.T, bin, dataDir, domain, boot string, extra ...string) *proc {
	t.Helper()
	args := []string{"run",
		"--listen", "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1",
		"--http", "127.0.0.1:0", "--data-dir", dataDir,
		"--engine", "synthetic", "--models", "syn-" + domain, "--domains", domain,
		"--dht-mode", "server", "--announce-interval", "2s", "--log-level", "debug"}
	args = append(args, extra...)
	if boot != "" {
		args = append(args, "--bootstrap", boot)
	}
	cmd := exec.Command(bin, args...)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	errf, err := os.Create(filepath.Join(dataDir, fmt.Sprintf("stderr-%d.log", time.Now().UnixNano())))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = errf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, dataDir: dataDir, domain: domain, stderr: errf, done: make(chan error, 1)}
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout)
	}()
	deadline := time.After(20 * time.Second)
	for p.http == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("mwpeer exited before it was up; stderr in %s", errf.Name())
			}
			k, v, _ := strings.Cut(l, " ")
			switch k {
			case "peer":
				p.id = v
			case "bootstrap":
				p.boot = v
			case "http":
				p.http = v
			}
		case <-deadline:
			t.Fatalf("mwpeer did not start within 20s; stderr in %s", errf.Name())
		}
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
		errf.Close()
		if t.Failed() {
			data, _ := os.ReadFile(errf.Name())
			lines := strings.Split(string(data), "\n")
			if len(lines) > 15 {
				lines = lines[len(lines)-15:]
			}
			t.Logf("tail of %s (%s):\n%s", p.id, domain, strings.Join(lines, "\n"))
		}
	})
	return p
}

type peersBody struct {
	Peers []struct {
		ID      string   `json:"id"`
		Domains []string `json:"domains"`
		Models  []struct {
			Name string `json:"name"`
		} `json:"models"`
		RTTMs     *float64 `json:"rtt_ms"`
		RTTSource string   `json:"rtt_source"`
		Conn      string   `json:"conn"`
	} `json:"peers"`
}

func getPeers(addr string) (peersBody, error) {
	var b peersBody
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/peers", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return b, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return b, fmt.Errorf("status %s", resp.Status)
	}
	return b, json.NewDecoder(resp.Body).Decode(&b)
}

// everyoneSees checks each live process's /api/peers lists exactly the
// other live processes, with their domain and model.
func everyoneSees(live []*proc) error {
	for _, p := range live {
		b, err := getPeers(p.http)
		if err != nil {
			return fmt.Errorf("%s: %v", p.id, err)
		}
		byID := map[string]int{}
		for i, e := range b.Peers {
			byID[e.ID] = i
		}
		if len(b.Peers) != len(live)-1 {
			return fmt.Errorf("%s lists %d peers, want %d", p.id[len(p.id)-6:], len(b.Peers), len(live)-1)
		}
		for _, q := range live {
			if q == p {
				continue
			}
			i, ok := byID[q.id]
			if !ok {
				return fmt.Errorf("%s does not list %s", p.id[len(p.id)-6:], q.id[len(q.id)-6:])
			}
			e := b.Peers[i]
			if len(e.Domains) != 1 || e.Domains[0] != q.domain || len(e.Models) != 1 || e.Models[0].Name != "syn-"+q.domain {
				return fmt.Errorf("%s has a wrong entry for %s: %v %v", p.id, q.id, e.Domains, e.Models)
			}
		}
	}
	return nil
}

func TestTenProcessesOnLoopback(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 10 mwpeer processes; skipped with -short")
	}
	bin := buildBinary(t)
	domains := []string{"general", "code", "math", "creative", "science", "reasoning"}
	root := t.TempDir()
	procs := make([]*proc, 10)
	procs[0] = startProc(t, bin, filepath.Join(root, "p0"), domains[0], "")
	var wg sync.WaitGroup
	for i := 1; i < len(procs); i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			procs[i] = startProc(t, bin, filepath.Join(root, fmt.Sprintf("p%d", i)), domains[i%len(domains)], procs[0].boot)
		}(i)
	}
	wg.Wait()
	took := wait.For(t, 15*time.Second, "every /api/peers lists the other 9", func() error { return everyoneSees(procs) })
	t.Logf("10 processes see each other after %s", took)
	var rss []string
	for _, p := range procs {
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid)); err == nil {
			for _, l := range strings.Split(string(data), "\n") {
				if strings.HasPrefix(l, "VmRSS:") {
					rss = append(rss, strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:")))
				}
			}
		}
	}
	t.Logf("RSS of each mwpeer process in a 10-peer swarm: %s", strings.Join(rss, ", "))

	// Kill one without a chance to say goodbye: it must age out.
	victim := procs[4]
	victim.cmd.Process.Signal(syscall.SIGKILL)
	<-victim.done
	live := append(append([]*proc{}, procs[:4]...), procs[5:]...)
	took = wait.For(t, 20*time.Second, "killed peer ages out", func() error { return everyoneSees(live) })
	t.Logf("killed peer aged out of every catalog after %s", took)

	// Stop one cleanly: SIGTERM exits 0 within 5 s; restarted, it keeps its ID.
	p := procs[7]
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("SIGTERM exit: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("mwpeer did not exit within 5s of SIGTERM")
	}
	t.Logf("SIGTERM to exit: %s", time.Since(start))
	again := startProc(t, bin, p.dataDir, p.domain, procs[0].boot)
	if again.id != p.id {
		t.Fatalf("restarted peer is %s, was %s", again.id, p.id)
	}
	live = append(append([]*proc{}, procs[:4]...), procs[5:7]...)
	live = append(live, again)
	live = append(live, procs[8:]...)
	wait.For(t, 15*time.Second, "restarted peer seen by all", func() error { return everyoneSees(live) })
}

func TestBadFlagsExit2(t *testing.T) {
	bin := buildBinary(t)
	cases := [][]string{
		{"run", "--listen", "not-a-multiaddr"},
		{"run", "--bootstrap", "/ip4/127.0.0.1/tcp/4001"},
		{"run", "--domains", "astrology"},
		{"run", "--lat", "95", "--lon", "0"},
		{"nonsense"},
	}
	for _, args := range cases {
		cmd := exec.Command(bin, append(args, "--data-dir", t.TempDir())...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("%v: exit %v, want 2\n%s", args, err, out)
			continue
		}
		if len(strings.TrimSpace(string(out))) == 0 {
			t.Errorf("%v: no error message", args)
		}
	}
}
