// Package nattest builds, in Linux network namespaces, two home networks
// behind NAT routers on a shared "internet", so that tests can run real
// mwpeer processes behind NAT and watch relaying and hole punching. It needs
// root, iproute2 (`ip`) and nftables (`nft`); conntrack is used if present.
//
//	                inet: bridge br0, 198.18.0.0/24 ("the internet")
//	    +--------------+---------------+----------------+------------+
//	  relay         NAT A (router)   NAT B (router)    outsider
//	198.18.0.10   wan 198.18.0.11    wan 198.18.0.12   198.18.0.20
//	              lan 10.99.1.1      lan 10.99.2.1
//	                  |                  |
//	               peer A 10.99.1.2   peer B 10.99.2.2
//
// The namespaces have no link to the host's network, so nothing a test does
// in them can reach the outside world. The routers masquerade outbound
// traffic and accept from the wan only packets of connections opened from
// inside (endpoint-independent mapping, address- and port-dependent
// filtering). In NATPortPreserving mode a mapping keeps the source port, so
// hole punching can work; in NATRandom mode every mapping gets a random port,
// like a symmetric NAT, and hole punching must fail.
//
// 198.18.0.0/15 is the benchmarking range that go-multiaddr treats as
// unroutable; processes in this topology must be told it is routable (mwpeer
// reads the test-only MWPEER_TEST_ROUTABLE for that).
package nattest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// NAT modes.
const (
	NATPortPreserving = "masq"   // masquerade keeping source ports: hole punching works
	NATRandom         = "random" // fully random source ports: a symmetric NAT
)

// Addresses in the topology.
const (
	InternetCIDR = "198.18.0.0/15" // what MWPEER_TEST_ROUTABLE must name
	RelayIP      = "198.18.0.10"
	NATAIP       = "198.18.0.11"
	NATBIP       = "198.18.0.12"
	OutsiderIP   = "198.18.0.20"
	PeerAIP      = "10.99.1.2"
	PeerBIP      = "10.99.2.2"
)

// Topology is a built set of namespaces. Its fields name them.
type Topology struct {
	Inet, Relay, RouterA, RouterB, PeerA, PeerB, Outsider string
	Mode                                                  string
}

// Available says why the topology cannot be built here, or "" if it can.
func Available() string {
	if os.Geteuid() != 0 {
		return "needs root to create network namespaces"
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("needs %s (apt-get install iproute2 nftables conntrack)", tool)
		}
	}
	return ""
}

// Up builds the topology with the given NAT mode under namespace names that
// start with a random prefix, so that concurrent runs do not collide. On
// error it removes whatever it built.
func Up(mode string) (*Topology, error) {
	if mode != NATPortPreserving && mode != NATRandom {
		return nil, fmt.Errorf("nattest: unknown NAT mode %q", mode)
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	pfx := fmt.Sprintf("%s%d-%s-", nsPrefix, os.Getpid(), hex.EncodeToString(b[:]))
	t := &Topology{
		Inet: pfx + "inet", Relay: pfx + "relay", RouterA: pfx + "ra", RouterB: pfx + "rb",
		PeerA: pfx + "pa", PeerB: pfx + "pb", Outsider: pfx + "out", Mode: mode,
	}
	if err := t.build(); err != nil {
		t.Down()
		return nil, err
	}
	return t, nil
}

// nsPrefix starts every namespace name, followed by the creating process's
// PID, so that RemoveStale can tell leftovers of a killed test.
const nsPrefix = "mwnat"

// RemoveStale deletes namespaces left by test processes that died before
// their cleanup ran (a killed `go test`), leaving those of live ones alone.
func RemoveStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		_ = run(nil, "ip", "netns", "del", e.Name())
	}
}

func (t *Topology) all() []string {
	return []string{t.Inet, t.Relay, t.RouterA, t.RouterB, t.PeerA, t.PeerB, t.Outsider}
}

func (t *Topology) build() error {
	var steps [][]string
	add := func(args ...string) { steps = append(steps, args) }
	for _, ns := range t.all() {
		add("ip", "netns", "add", ns)
	}
	for _, ns := range t.all() {
		add("ip", "-n", ns, "link", "set", "lo", "up")
		add("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	add("ip", "-n", t.Inet, "link", "add", "br0", "type", "bridge")
	add("ip", "-n", t.Inet, "link", "set", "br0", "up")
	// A host on the internet: a veth created inside ns, its other end in the bridge.
	wan := func(ns, ifname, addr, port string) {
		add("ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", t.Inet)
		add("ip", "-n", ns, "addr", "add", addr+"/24", "dev", ifname)
		add("ip", "-n", ns, "link", "set", ifname, "up")
		add("ip", "-n", t.Inet, "link", "set", port, "master", "br0", "up")
	}
	wan(t.Relay, "eth0", RelayIP, "relay")
	wan(t.RouterA, "wan", NATAIP, "nata")
	wan(t.RouterB, "wan", NATBIP, "natb")
	wan(t.Outsider, "eth0", OutsiderIP, "out")
	// A home network: the router's lan side and the peer behind it.
	lan := func(router, host, prefix string) {
		add("ip", "-n", router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", host)
		add("ip", "-n", router, "addr", "add", prefix+".1/24", "dev", "lan")
		add("ip", "-n", router, "link", "set", "lan", "up")
		add("ip", "-n", host, "addr", "add", prefix+".2/24", "dev", "eth0")
		add("ip", "-n", host, "link", "set", "eth0", "up")
		add("ip", "-n", host, "route", "add", "default", "via", prefix+".1")
		add("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	lan(t.RouterA, t.PeerA, "10.99.1")
	lan(t.RouterB, t.PeerB, "10.99.2")
	for _, s := range steps {
		if err := run(nil, s...); err != nil {
			return err
		}
	}
	for _, r := range []string{t.RouterA, t.RouterB} {
		if err := run(strings.NewReader(natRules(t.Mode)), "ip", "netns", "exec", r, "nft", "-f", "-"); err != nil {
			return err
		}
	}
	return nil
}

// natRules is the router's ruleset: masquerade out of the wan, and a
// stateful firewall that lets in from the wan only replies.
func natRules(mode string) string {
	masq := "masquerade"
	if mode == NATRandom {
		masq = "masquerade random,fully-random"
	}
	return `table ip nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" ` + masq + `
	}
}
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		iifname "lan" accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "lan" oifname "wan" accept
		counter comment "unsolicited inbound dropped"
	}
}
`
}

// Down deletes every namespace of the topology (and with them their links
// and rules). It is safe to call more than once.
func (t *Topology) Down() error {
	var errs []error
	for _, ns := range t.all() {
		if _, err := os.Stat("/run/netns/" + ns); err != nil {
			continue
		}
		if err := run(nil, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Forget drops the routers' conntrack state for traffic from or to each of
// ips, so that a restarted peer starts with fresh NAT mappings. It is a no-op
// without the conntrack tool.
func (t *Topology) Forget(ips ...string) {
	if _, err := exec.LookPath("conntrack"); err != nil {
		return
	}
	for _, r := range []string{t.RouterA, t.RouterB} {
		for _, ip := range ips {
			for _, dir := range []string{"-s", "-d"} {
				_ = run(nil, "ip", "netns", "exec", r, "conntrack", "-D", dir, ip) // exits 1 when nothing matched
			}
		}
	}
}

// Command returns a command that runs name with args inside namespace ns.
// The process is killed if the one that started it dies, so that a killed
// test leaves no peers running.
func Command(ns, name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func run(stdin io.Reader, args ...string) error {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
