package nattest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mwpeer/mwpeer/internal/wait"
)

// runsEnv sets how many hole punches TestNATTraversal measures per
// transport (default defaultRuns, to keep CI short; 20 for the figures in
// the issue).
const (
	runsEnv     = "MWPEER_NAT_RUNS"
	defaultRuns = 3
	model       = "syn"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// mwpeerBinary builds ./cmd/mwpeer once per test binary.
func mwpeerBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mwpeer-nattest-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "mwpeer")
		// Under -race the peers are built with -race too, and a race
		// report in their logs fails the test (see startNode).
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "../../cmd/mwpeer")...).CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// node is one `mwpeer run` process inside a namespace, with its HTTP API
// reachable from the test through a unix-socket proxy.
type node struct {
	name, ns, id string
	logPath      string
	cmd          *exec.Cmd
	done         chan struct{}
	http         *http.Client
}

func startNode(t *testing.T, topo *Topology, name, ns string, args ...string) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{name: name, ns: ns, logPath: filepath.Join(dir, "stderr.log"), done: make(chan struct{})}
	logf, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"run", "--data-dir", filepath.Join(dir, "data"), "--http", "127.0.0.1:8080",
		"--announce-interval", "1s", "--log-level", "info"}, args...)
	n.cmd = Command(ns, mwpeerBinary(t), args...)
	n.cmd.Env = append(os.Environ(), "MWPEER_TEST_ROUTABLE="+InternetCIDR)
	n.cmd.Stderr = logf
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	go func() {
		n.cmd.Wait()
		logf.Close()
		close(n.done)
	}()
	t.Cleanup(func() {
		n.stop()
		if strings.Contains(readFile(n.logPath), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", n.name, readFile(n.logPath))
		}
		if t.Failed() {
			t.Logf("log of %s:\n%s", n.name, tail(n.logPath, 25))
		}
	})
	deadline := time.After(30 * time.Second)
	for up := false; !up; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s exited before it was up:\n%s", name, tail(n.logPath, 25))
			}
			k, v, _ := strings.Cut(l, " ")
			switch k {
			case "peer":
				n.id = v
			case "http":
				up = true
			}
		case <-deadline:
			t.Fatalf("%s did not start within 30s:\n%s", name, tail(n.logPath, 25))
		}
	}
	go func() {
		for range lines {
		}
	}()

	sock := filepath.Join(dir, "http.sock")
	px := Command(ns, selfExe(), sock, "127.0.0.1:8080")
	px.Env = append(os.Environ(), helperEnv+"=proxy")
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	pxDone := make(chan struct{})
	go func() { px.Wait(); close(pxDone) }()
	t.Cleanup(func() { px.Process.Kill(); <-pxDone })
	// Every request goes to the proxy; its URL names localhost because the
	// API refuses Host headers that do not name loopback.
	n.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	wait.For(t, 10*time.Second, name+"'s HTTP proxy", func() error {
		var st status
		return n.get("/api/status", &st)
	})
	return n
}

// stop ends the process with SIGTERM, then SIGKILL after 6 s.
func (n *node) stop() {
	select {
	case <-n.done:
		return
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(6 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
	}
}

func (n *node) get(path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://localhost"+path, nil)
	resp, err := n.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

type status struct {
	ID           string   `json:"id"`
	Reachability string   `json:"reachability"`
	Relays       []string `json:"relay_reservations"`
	HolePunching bool     `json:"hole_punching"`
	Connections  []struct {
		Peer      string `json:"peer"`
		Transport string `json:"transport"`
		Relayed   bool   `json:"relayed"`
	} `json:"connections"`
}

type peers struct {
	Peers []struct {
		ID     string `json:"id"`
		Conn   string `json:"conn"`
		Models []struct {
			Name string `json:"name"`
		} `json:"models"`
	} `json:"peers"`
}

// conn is what n's /api/peers says of its connection to id ("" if unknown).
func (n *node) conn(id string) string {
	var ps peers
	if n.get("/api/peers", &ps) != nil {
		return ""
	}
	for _, p := range ps.Peers {
		if p.ID == id {
			return p.Conn
		}
	}
	return ""
}

// knowsModel reports whether n's catalog lists id serving model.
func (n *node) knowsModel(id string) bool {
	var ps peers
	if n.get("/api/peers", &ps) != nil {
		return false
	}
	for _, p := range ps.Peers {
		if p.ID == id {
			for _, m := range p.Models {
				if m.Name == model {
					return true
				}
			}
		}
	}
	return false
}

// ready reports whether n holds a relay reservation and can hole punch.
func (n *node) ready() bool {
	var st status
	return n.get("/api/status", &st) == nil && len(st.Relays) > 0 && st.HolePunching
}

// answer is the outcome of one prompt sent to a peer's OpenAI API.
type answer struct {
	status int
	expert string
	text   string
	ttft   time.Duration // time to the response headers, which wait for the first token
	body   string        // error body when status is not 200
}

func (n *node) prompt(t *testing.T) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := `{"model":"` + model + `","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"say hello"}]}`
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://localhost/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := n.http.Do(req)
	if err != nil {
		t.Fatalf("prompt to %s: %v", n.name, err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, expert: resp.Header.Get("X-Mwpeer-Experts"), ttft: time.Since(start)}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		a.body = string(b)
		return a
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal([]byte(data), &ev) != nil {
			continue
		}
		if ev.Error != nil {
			t.Fatalf("prompt to %s: error mid-stream: %s", n.name, ev.Error.Message)
		}
		for _, c := range ev.Choices {
			a.text += c.Delta.Content
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("prompt to %s: read answer: %v", n.name, err)
	}
	return a
}

var upgradeLine = regexp.MustCompile(`msg="relayed connection upgraded to direct".*remote=(.+?) transport=(\S+) after=(\S+)`)

// upgrade returns how long n's relayed connection to a peer took to become
// direct, from n's log, and over which transport; ok is false if it did not.
func (n *node) upgrade() (after time.Duration, transport string, ok bool) {
	data, _ := os.ReadFile(n.logPath)
	m := upgradeLine.FindSubmatch(data)
	if m == nil {
		return 0, "", false
	}
	d, err := time.ParseDuration(string(m[3]))
	return d, string(m[2]), err == nil
}

func (n *node) logContains(s string) bool {
	return strings.Contains(readFile(n.logPath), s)
}

func readFile(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

// poll waits for cond like wait.For but reports instead of failing.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// swarm is a relay on the internet and peer A (serving model syn) behind NAT A.
type swarm struct {
	topo     *Topology
	relay, a *node
	listen   func(port int) string
	bootArgs string // --bootstrap value: the relay
}

func listenFor(transport string) func(port int) string {
	return func(port int) string {
		tcp := fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", port)
		quic := fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", port)
		switch transport {
		case "tcp":
			return tcp
		case "quic":
			return quic
		}
		return tcp + "," + quic
	}
}

func startSwarm(t *testing.T, mode, transport string) *swarm {
	t.Helper()
	if why := Available(); why != "" {
		t.Skip("NAT test skipped: " + why)
	}
	topo, err := Up(mode)
	if err != nil {
		t.Fatalf("build topology: %v", err)
	}
	t.Cleanup(func() {
		if err := topo.Down(); err != nil {
			t.Errorf("remove topology: %v", err)
		}
	})
	s := &swarm{topo: topo, listen: listenFor(transport)}
	s.relay = startNode(t, topo, "relay", topo.Relay, "--listen", s.listen(4001), "--engine", "none",
		"--reachability", "public", "--relay-service=true", "--dht-mode", "server")
	var boot []string
	if transport != "quic" {
		boot = append(boot, fmt.Sprintf("/ip4/%s/tcp/4001/p2p/%s", RelayIP, s.relay.id))
	}
	if transport != "tcp" {
		boot = append(boot, fmt.Sprintf("/ip4/%s/udp/4001/quic-v1/p2p/%s", RelayIP, s.relay.id))
	}
	s.a = startNode(t, topo, "a", topo.PeerA, "--listen", s.listen(4001), "--bootstrap", strings.Join(boot, ","),
		"--engine", "synthetic", "--models", model, "--reachability", "private")
	wait.For(t, 30*time.Second, "A's relay reservation", func() error {
		if !s.a.ready() {
			return errors.New("no relay reservation or no hole punching yet")
		}
		return nil
	})
	s.bootArgs = strings.Join(boot, ",")
	return s
}

// startB starts peer B behind NAT B (serving nothing) listening on port and
// waits until it has a relay slot, can hole punch and knows A serves the model.
func (s *swarm) startB(t *testing.T, port int) *node {
	t.Helper()
	b, err := s.tryStartB(t, port)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tryStartB is startB that reports a B that does not get ready instead of
// failing the test.
func (s *swarm) tryStartB(t *testing.T, port int) (*node, error) {
	t.Helper()
	b := startNode(t, s.topo, "b", s.topo.PeerB, "--listen", s.listen(port), "--bootstrap", s.bootArgs,
		"--engine", "none", "--reachability", "private")
	if !poll(30*time.Second, b.ready) {
		b.stop()
		return nil, fmt.Errorf("B on port %d: no relay reservation or hole punching within 30s", port)
	}
	if !poll(30*time.Second, func() bool { return b.knowsModel(s.a.id) }) {
		b.stop()
		return nil, fmt.Errorf("B on port %d did not learn within 30s that A serves %s", port, model)
	}
	return b, nil
}

// assertNotDialable checks that nobody on the internet can open a
// connection to A: neither at NAT A's public address nor at A's own.
func (s *swarm) assertNotDialable(t *testing.T, transport string) {
	t.Helper()
	for _, ip := range []string{NATAIP, PeerAIP} {
		addr := fmt.Sprintf("/ip4/%s/tcp/4001/p2p/%s", ip, s.a.id)
		if transport == "quic" {
			addr = fmt.Sprintf("/ip4/%s/udp/4001/quic-v1/p2p/%s", ip, s.a.id)
		}
		cmd := Command(s.topo.Outsider, selfExe(), addr)
		cmd.Env = append(os.Environ(), helperEnv+"=dial")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("the outsider dialed A directly at %s: NAT A lets unsolicited traffic in", addr)
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Fatalf("outsider dial %s: %v\n%s", addr, err, out)
		}
	}
}

func runs(t *testing.T) int {
	if v := os.Getenv(runsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive integer", runsEnv, v)
		}
		return n
	}
	return defaultRuns
}

// TTFT kinds in the figures.
const (
	ttftDirectFirst  = "direct, first prompt (dial + punch)"
	ttftDirect       = "direct, established"
	ttftRelayedFirst = "relayed, first prompt (dial + RelayWait)"
	ttftRelayed      = "relayed, established"
)

// figures collects what the issue asks to report.
type figures struct {
	mu       sync.Mutex
	punched  map[string][2]int // transport -> {successes, runs}
	upgrade  map[string][]time.Duration
	ttft     map[string][]time.Duration // "direct" or "relayed"
	runsWant int
}

func (f *figures) add(kind string, d time.Duration) {
	f.mu.Lock()
	f.ttft[kind] = append(f.ttft[kind], d)
	f.mu.Unlock()
}

func (f *figures) report(t *testing.T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sb strings.Builder
	fmt.Fprintf(&sb, "NAT traversal figures (%d runs per transport wanted; %s sets it):\n", f.runsWant, runsEnv)
	for _, tr := range []string{"tcp", "quic"} {
		p := f.punched[tr]
		if p[1] == 0 {
			continue
		}
		fmt.Fprintf(&sb, "  %-4s hole punch: %d/%d succeeded; relayed->direct p50 %v max %v\n", tr, p[0], p[1], p50(f.upgrade[tr]), maxOf(f.upgrade[tr]))
	}
	for _, k := range []string{ttftDirectFirst, ttftDirect, ttftRelayedFirst, ttftRelayed} {
		if d := f.ttft[k]; len(d) > 0 {
			fmt.Fprintf(&sb, "  TTFT B->A %-42s p50 %v max %v over %d prompts\n", k+":", p50(d), maxOf(d), len(d))
		}
	}
	t.Log(sb.String())
}

func p50(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)/2].Round(10 * time.Microsecond)
}

func maxOf(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d).Round(10 * time.Microsecond)
}

// TestNATTraversal runs real mwpeer processes behind two NATs: a relay on
// the internet, peer A behind NAT A serving a model, peer B behind NAT B
// serving nothing. Over TCP only and over QUIC only, with port-preserving
// NATs: nobody outside can dial A; B reaches A through the relay; DCUtR
// upgrades that to a direct connection; a prompt sent to B's HTTP API is
// answered by A over the direct connection. With symmetric NATs the punch
// fails and the prompt, A being the only expert, is answered over the relay
// (see mwpeer's relay policy in relayed.go).
func TestNATTraversal(t *testing.T) {
	if why := Available(); why != "" {
		t.Skip("NAT test skipped: " + why)
	}
	RemoveStale()
	f := &figures{punched: map[string][2]int{}, upgrade: map[string][]time.Duration{}, ttft: map[string][]time.Duration{}, runsWant: runs(t)}
	for _, transport := range []string{"tcp", "quic"} {
		t.Run(transport, func(t *testing.T) {
			s := startSwarm(t, NATPortPreserving, transport)
			s.assertNotDialable(t, transport)
			var last time.Time
			for i := 0; i < f.runsWant; i++ {
				// Each run is a new B (new identity, new port): a fresh
				// relayed connection to A and a fresh punch. Every B comes
				// from NAT B's one address, and A's resource manager
				// accepts new connections from one IPv4 address in a
				// burst of 16, then one per 5 s: pace the runs after
				// the first dozen.
				if i >= 12 {
					time.Sleep(time.Until(last.Add(5200 * time.Millisecond)))
				}
				last = time.Now()
				s.punchRun(t, transport, 4100+i, i == 0, f)
			}
		})
	}
	t.Run("symmetric", func(t *testing.T) {
		s := startSwarm(t, NATRandom, "quic")
		s.assertNotDialable(t, "quic")
		b := s.startB(t, 4001)
		a := b.prompt(t)
		switch a.status {
		case 200:
			if a.expert != s.a.id || a.text == "" {
				t.Fatalf("answer from %q (want A %s): %q", a.expert, s.a.id, a.text)
			}
			if c := b.conn(s.a.id); c != "relayed" {
				t.Fatalf("B's connection to A is %q; with symmetric NATs it must stay relayed", c)
			}
			if !b.logContains("answering over the relayed connection") {
				t.Fatalf("B's log does not say the answer came over the relay:\n%s", tail(b.logPath, 25))
			}
			f.add(ttftRelayedFirst, a.ttft)
		case 502, 503:
			t.Logf("prompt over symmetric NATs: %d %s", a.status, a.body)
		default:
			t.Fatalf("prompt over symmetric NATs: %d %s (want an answer, 502 or 503)", a.status, a.body)
		}
		if _, _, ok := b.upgrade(); ok {
			t.Fatalf("a connection was hole punched through symmetric NATs; the topology is not symmetric")
		}
		// Relayed TTFT: more prompts on the same relayed connection.
		for i := 1; i < 5; i++ {
			if a := b.prompt(t); a.status == 200 {
				f.add(ttftRelayed, a.ttft)
			}
		}

		// A second expert C, on the internet: A, reachable only through
		// the relay, is no longer the only expert, so it steps aside.
		c := startNode(t, s.topo, "c", s.topo.Outsider, "--listen", s.listen(4001), "--bootstrap", s.bootArgs,
			"--engine", "synthetic", "--models", model, "--reachability", "public")
		wait.For(t, 30*time.Second, "B to learn that C serves "+model, func() error {
			if !b.knowsModel(c.id) {
				return errors.New("not in B's /api/peers")
			}
			return nil
		})
		relayedBefore := strings.Count(readFile(b.logPath), "answering over the relayed connection")
		for i := 0; i < 3; i++ {
			a := b.prompt(t)
			if a.status != 200 || a.expert != c.id {
				t.Fatalf("prompt %d with C in the swarm: status %d, expert %q (want C %s), body %s", i, a.status, a.expert, c.id, a.body)
			}
		}
		if n := strings.Count(readFile(b.logPath), "answering over the relayed connection"); n != relayedBefore {
			t.Fatalf("B used the relayed connection to A although C could answer")
		}
		t.Logf("with C in the swarm, A was chosen and stepped aside %d times in 3 prompts",
			strings.Count(readFile(b.logPath), "routing to another expert"))
	})
	f.report(t)
}

// punchRun starts a new B on port, prompts it, and records whether the
// relayed connection to A became direct, how fast, and the TTFT. The first
// run (strict) fails the test on anything wrong; later runs only count.
func (s *swarm) punchRun(t *testing.T, transport string, port int, strict bool, f *figures) {
	t.Helper()
	s.topo.Forget(PeerBIP, NATBIP)
	var b *node
	if strict {
		b = s.startB(t, port)
	} else {
		var err error
		if b, err = s.tryStartB(t, port); err != nil {
			t.Logf("run not counted: %v", err)
			return
		}
	}
	defer b.stop()
	a := b.prompt(t)
	if a.status != 200 || a.text == "" || a.expert != s.a.id {
		t.Fatalf("prompt to B: status %d, expert %q (want A %s), text %q, body %s", a.status, a.expert, s.a.id, a.text, a.body)
	}
	direct := poll(5*time.Second, func() bool { return b.conn(s.a.id) == "direct" })
	after, tr, upgraded := b.upgrade()
	f.mu.Lock()
	p := f.punched[transport]
	p[1]++
	if direct && upgraded {
		p[0]++
		f.upgrade[transport] = append(f.upgrade[transport], after)
		f.ttft[ttftDirectFirst] = append(f.ttft[ttftDirectFirst], a.ttft)
	}
	f.punched[transport] = p
	f.mu.Unlock()
	if !strict {
		if !direct || !upgraded {
			t.Logf("run on port %d: no direct connection (conn %q, upgrade logged %v)", port, b.conn(s.a.id), upgraded)
		}
		return
	}
	if !upgraded {
		t.Fatalf("B's log shows no relayed connection to A becoming direct:\n%s", tail(b.logPath, 25))
	}
	if !direct {
		t.Fatalf("B's connection to A is %q, want direct", b.conn(s.a.id))
	}
	if tr != transport {
		t.Fatalf("the direct connection is over %s, want %s", tr, transport)
	}
	var st status
	if err := b.get("/api/status", &st); err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Connections {
		if c.Peer == s.a.id && !c.Relayed && c.Transport != transport {
			t.Fatalf("B has a direct %s connection to A, want only %s", c.Transport, transport)
		}
	}
	if b.logContains("routing to another expert") || b.logContains("answering over the relayed connection") {
		t.Fatalf("the prompt did not wait for the direct connection:\n%s", tail(b.logPath, 25))
	}
	for i := 0; i < 4; i++ {
		a := b.prompt(t)
		if a.status != 200 || a.expert != s.a.id {
			t.Fatalf("prompt %d to B: status %d, expert %q, body %s", i+2, a.status, a.expert, a.body)
		}
		f.add(ttftDirect, a.ttft)
	}
}
