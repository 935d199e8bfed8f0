package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/mwpeer/mwpeer"
	"github.com/mwpeer/mwpeer/api"
	"github.com/mwpeer/mwpeer/p2p"
)

// runID prints the peer ID stored in the data dir (creating it on first
// use) and the --bootstrap value for each address another machine could dial.
func runID(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mwpeer id", flag.ContinueOnError)
	fs.SetOutput(stderr)
	build := peerFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	cfg, err := build()
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitUsage
	}
	key, err := p2p.LoadOrCreateIdentity(filepath.Join(cfg.DataDir, p2p.IdentityFile))
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "peer ID: %s\n", id)
	addrs := dialableAddrs(cfg)
	if len(addrs) == 0 {
		fmt.Fprintf(stdout, "no fixed address to share (listening on port 0?); ask the running peer: mwpeer status\n")
		return exitOK
	}
	fmt.Fprintf(stdout, "join through this peer with:\n  --bootstrap %s/p2p/%s\n", addrs[0], id)
	if len(addrs) > 1 {
		fmt.Fprintf(stdout, "other addresses of this machine:\n")
		for _, a := range addrs[1:] {
			fmt.Fprintf(stdout, "  %s/p2p/%s\n", a, id)
		}
	}
	return exitOK
}

// dialableAddrs turns the configured listen addresses into addresses others
// can dial: announced ones first, then unspecified IPs resolved to this
// machine's interfaces, public before private before loopback.
func dialableAddrs(cfg mwpeer.Config) []ma.Multiaddr {
	var out []ma.Multiaddr
	announce, _ := p2p.ParseAddrs(cfg.Announce)
	out = append(out, announce...)
	listen, _ := p2p.ParseAddrs(cfg.Listen)
	ifaces, _ := manet.InterfaceMultiaddrs()
	resolved, err := manet.ResolveUnspecifiedAddresses(listen, ifaces)
	if err != nil {
		resolved = listen
	}
	rank := func(a ma.Multiaddr) int {
		switch {
		case manet.IsPublicAddr(a):
			return 0
		case manet.IsIPLoopback(a):
			return 2
		case manet.IsIP6LinkLocal(a):
			return 3
		}
		return 1
	}
	var local []ma.Multiaddr
	for _, a := range resolved {
		if hasZeroPort(a) || manet.IsIP6LinkLocal(a) {
			continue
		}
		local = append(local, a)
	}
	sort.SliceStable(local, func(i, j int) bool { return rank(local[i]) < rank(local[j]) })
	return append(out, local...)
}

func hasZeroPort(a ma.Multiaddr) bool {
	for _, c := range a {
		if (c.Protocol().Code == ma.P_TCP || c.Protocol().Code == ma.P_UDP) && c.Value() == "0" {
			return true
		}
	}
	return false
}

// httpFlag parses the flags of a client subcommand.
func clientFlags(name string, args []string, stderr io.Writer) (string, bool, int) {
	fs := flag.NewFlagSet("mwpeer "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	httpAddr := fs.String("http", env("HTTP", mwpeer.DefaultConfig().HTTPAddr), "HTTP address of the running peer (MWPEER_HTTP)")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", false, exitOK
		}
		return "", false, exitUsage
	}
	return *httpAddr, *asJSON, -1
}

func getJSON(ctx context.Context, addr, path string, v any) ([]byte, error) {
	base := addr
	if !strings.Contains(base, "://") {
		if _, _, err := net.SplitHostPort(base); err != nil {
			return nil, fmt.Errorf("--http %q: want host:port", addr)
		}
		base = "http://" + base
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no peer answering at %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s: %s", addr, resp.Status, clean(strings.TrimSpace(string(body))))
	}
	return body, json.Unmarshal(body, v)
}

// query runs a client subcommand's common part: parse its flags, GET path
// from the running peer into v, and print the raw JSON when --json was
// given. It returns the exit code when the subcommand is done already, or
// -1 when v is filled and waits to be printed.
func query(ctx context.Context, name, path string, v any, args []string, stdout, stderr io.Writer) int {
	addr, asJSON, code := clientFlags(name, args, stderr)
	if code >= 0 {
		return code
	}
	raw, err := getJSON(ctx, addr, path, v)
	if err != nil {
		fmt.Fprintf(stderr, "mwpeer: %v\n", err)
		return exitError
	}
	if asJSON {
		stdout.Write(cleanJSON(raw))
		return exitOK
	}
	return -1
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var st api.Status
	if code := query(ctx, "status", "/api/status", &st, args, stdout, stderr); code >= 0 {
		return code
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "peer\t%s\n", clean(st.ID))
	fmt.Fprintf(w, "version\t%s\n", clean(st.Version))
	fmt.Fprintf(w, "uptime\t%s\n", (time.Duration(st.Uptime) * time.Second).String())
	fmt.Fprintf(w, "bootstrap\t%s\n", clean(st.Bootstrap))
	fmt.Fprintf(w, "reachability\t%s\n", clean(st.Reachability))
	fmt.Fprintf(w, "hole punching\t%s\n", map[bool]string{true: "ready", false: "not ready (no public address of its own known yet)"}[st.HolePunching])
	fmt.Fprintf(w, "engine\t%s\n", clean(st.Engine))
	if st.EngineNote != "" {
		fmt.Fprintf(w, "\t%s\n", clean(st.EngineNote))
	}
	fmt.Fprintf(w, "models\t%s\n", clean(strings.Join(st.Models, ", ")))
	fmt.Fprintf(w, "domains\t%s\n", clean(strings.Join(st.Domains, ", ")))
	fmt.Fprintf(w, "connected peers\t%d\n", st.ConnectedPeers)
	fmt.Fprintf(w, "catalog\t%d peers\n", st.CatalogSize)
	fmt.Fprintf(w, "DHT\t%s, %d in routing table\n", clean(st.DHTMode), st.DHTPeers)
	fmt.Fprintf(w, "announce\tevery %.1fs, TTL %.1fs, %d accepted\n", st.Announce.IntervalS, st.Announce.TTLS, st.Announce.Accepted)
	var rej []string
	for _, k := range sortedKeys(st.Rejected) {
		if st.Rejected[k] > 0 {
			rej = append(rej, fmt.Sprintf("%s=%d", clean(k), st.Rejected[k]))
		}
	}
	if len(rej) == 0 {
		rej = []string{"none"}
	}
	fmt.Fprintf(w, "rejected announcements\t%s\n", strings.Join(rej, " "))
	for _, a := range st.ListenAddrs {
		fmt.Fprintf(w, "listening\t%s\n", clean(a))
	}
	for _, r := range st.Relays {
		fmt.Fprintf(w, "relay reservation\t%s\n", clean(r))
	}
	for _, c := range st.Connections {
		kind := "direct"
		if c.Relayed {
			kind = "relayed"
		}
		fmt.Fprintf(w, "connection\t%s %s %s %s\n", short(c.Peer), kind, clean(c.Transport), clean(c.Direction))
	}
	w.Flush()
	return exitOK
}

func runPeers(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var ps api.Peers
	if code := query(ctx, "peers", "/api/peers", &ps, args, stdout, stderr); code >= 0 {
		return code
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PEER\tDOMAINS\tMODELS\tREGION\tRTT\tCONN\tLOAD\tSEEN")
	for _, p := range ps.Peers {
		var models []string
		for _, m := range p.Models {
			models = append(models, m.Name)
		}
		rtt := "?"
		if p.RTTMs != nil {
			rtt = fmt.Sprintf("%.1fms (%s)", *p.RTTMs, p.RTTSource)
		}
		region := p.Region
		if region == "" {
			region = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s ago\n", short(p.ID), clean(strings.Join(p.Domains, ",")), clean(strings.Join(models, ",")),
			clean(region), clean(rtt), clean(p.Conn), p.Load, p.Capacity, time.Since(p.LastSeen).Round(time.Second))
	}
	w.Flush()
	fmt.Fprintf(stdout, "%d peers\n", len(ps.Peers))
	return exitOK
}

// short abbreviates a peer ID for a table, cleaned of controls first.
func short(id string) string {
	r := []rune(clean(id))
	if len(r) > 12 {
		return string(r[:4]) + "…" + string(r[len(r)-6:])
	}
	return string(r)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
