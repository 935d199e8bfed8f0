package consent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // hours of service in any time zone, whatever the system has

	"github.com/BurntSushi/toml"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.yaml.in/yaml/v3"
)

// Who may use the models this peer shares (Policy.Who). A caller is served
// when it matches any of them and is not denied. A valid consent token for
// the model admits its holder whatever Who says.
const (
	Anyone       = "anyone"       // every peer
	Contributors = "contributors" // peers that gave this peer more than they took (positive balance)
	Allowlist    = "allowlist"    // the peer IDs listed in Allow
	Grants       = "grants"       // holders of a consent token only (the same as listing nothing else)
	Members      = "members"      // peers with a valid membership certificate (--trust-issuer)
)

var whoValues = []string{Anyone, Contributors, Allowlist, Grants, Members}

// MaxPolicySize caps a policy file.
const MaxPolicySize = 1 << 20

// Policy is what a volunteer consents to serve. The zero Policy (and an
// empty file) serves every model it has to anyone, without limits, at any
// hour, and offers expert hosting, shard seeding and relaying: what a peer
// without --policy does.
type Policy struct {
	// Share lists the models shared with the swarm, as path.Match patterns
	// ("llama3*"); empty shares every model the peer serves. Local lists
	// models that stay local whatever Share says. A model not shared is
	// neither announced nor served to other peers; the local user still has
	// it.
	Share []string `toml:"share" yaml:"share"`
	Local []string `toml:"local" yaml:"local"`
	// Who may use them: some of anyone, contributors, allowlist, grants,
	// members. Empty means anyone.
	Who []string `toml:"who" yaml:"who"`
	// Allow are the peer IDs of the allowlist; Deny are never served, not
	// even with a consent token.
	Allow []string `toml:"allow" yaml:"allow"`
	Deny  []string `toml:"deny" yaml:"deny"`
	// Limits apply to each other peer on its own.
	Limits Limits `toml:"limits" yaml:"limits"`
	// Hours of service: other peers are served only within one of these
	// windows ("08:00-18:00"; "22:00-06:00" runs past midnight) on one of
	// Days ("mon".."sun"), in Timezone (an IANA name; empty: the system's
	// local time). Empty Hours or Days: at any hour or on any day.
	Hours    []string `toml:"hours" yaml:"hours"`
	Days     []string `toml:"days" yaml:"days"`
	Timezone string   `toml:"timezone" yaml:"timezone"`
	// What else the peer offers; unset means yes.
	HostExperts *bool `toml:"host_experts" yaml:"host_experts"` // answer expert calls of sharded models
	SeedShards  *bool `toml:"seed_shards" yaml:"seed_shards"`   // upload model shards to other peers
	Relay       *bool `toml:"relay" yaml:"relay"`               // offer circuit relay (read at start only)

	allow, deny map[peer.ID]bool
	who         map[string]bool
	windows     []window
	days        [7]bool // by time.Weekday; all true when Days is empty
	loc         *time.Location
}

// Limits bound what one other peer gets. Zero means no limit.
type Limits struct {
	// Concurrent requests in flight at once.
	Concurrent int `toml:"concurrent" yaml:"concurrent"`
	// MaxTokens per request: a request asking for more, or for no bound,
	// is served up to this many completion tokens.
	MaxTokens int `toml:"max_tokens" yaml:"max_tokens"`
	// TokensPerHour, prompt and completion tokens together, over a sliding
	// hour (a bucket that refills continuously).
	TokensPerHour int64 `toml:"tokens_per_hour" yaml:"tokens_per_hour"`
}

// window is a daily span of minutes since midnight; end < start runs past
// midnight.
type window struct{ start, end int }

// Load reads and checks a policy file: TOML, or YAML when its name ends in
// .yaml or .yml. Unknown keys are errors, so a typo cannot silently widen
// what is served.
func Load(file string) (*Policy, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxPolicySize+1)); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if buf.Len() > MaxPolicySize {
		return nil, fmt.Errorf("%s: larger than %d bytes", file, MaxPolicySize)
	}
	format := "toml"
	switch strings.ToLower(filepath.Ext(file)) {
	case ".yaml", ".yml":
		format = "yaml"
	}
	p, err := Parse(buf.Bytes(), format)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return p, nil
}

// Parse reads a policy in format ("toml" or "yaml") and checks it.
func Parse(data []byte, format string) (*Policy, error) {
	var p Policy
	switch format {
	case "toml":
		md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&p)
		if err != nil {
			return nil, err
		}
		if und := md.Undecoded(); len(und) > 0 {
			return nil, fmt.Errorf("unknown key %q", und[0].String())
		}
	case "yaml":
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) { // an empty file is the default policy
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown policy format %q (want toml or yaml)", format)
	}
	if err := p.compile(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Default is the policy of a peer without a policy file.
func Default() *Policy {
	p := &Policy{}
	_ = p.compile()
	return p
}

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

func (p *Policy) compile() error {
	for _, pat := range slices.Concat(p.Share, p.Local) {
		if _, err := path.Match(pat, ""); err != nil || pat == "" {
			return fmt.Errorf("bad model pattern %q", pat)
		}
	}
	p.who = map[string]bool{}
	for _, w := range p.Who {
		if !slices.Contains(whoValues, w) {
			return fmt.Errorf("who: unknown value %q (want some of %s)", w, strings.Join(whoValues, ", "))
		}
		p.who[w] = true
	}
	if len(p.Who) == 0 {
		p.who[Anyone] = true
	}
	var err error
	if p.allow, err = peerSet("allow", p.Allow); err != nil {
		return err
	}
	if p.deny, err = peerSet("deny", p.Deny); err != nil {
		return err
	}
	if p.who[Allowlist] && len(p.allow) == 0 {
		return errors.New("who includes allowlist but allow lists no peer")
	}
	if p.Limits.Concurrent < 0 || p.Limits.MaxTokens < 0 || p.Limits.TokensPerHour < 0 {
		return errors.New("limits: a negative value")
	}
	p.windows = nil
	for _, h := range p.Hours {
		w, err := parseWindow(h)
		if err != nil {
			return fmt.Errorf("hours: %w", err)
		}
		p.windows = append(p.windows, w)
	}
	for i := range p.days {
		p.days[i] = len(p.Days) == 0
	}
	for _, d := range p.Days {
		i := slices.Index(dayNames, strings.ToLower(d))
		if i < 0 {
			return fmt.Errorf("days: unknown day %q (want mon, tue, wed, thu, fri, sat, sun)", d)
		}
		p.days[i] = true
	}
	p.loc = time.Local
	if p.Timezone != "" {
		if p.loc, err = time.LoadLocation(p.Timezone); err != nil {
			return fmt.Errorf("timezone: %w", err)
		}
	}
	return nil
}

func peerSet(field string, ids []string) (map[peer.ID]bool, error) {
	set := make(map[peer.ID]bool, len(ids))
	for _, s := range ids {
		id, err := peer.Decode(s)
		if err != nil {
			return nil, fmt.Errorf("%s: bad peer ID %q: %w", field, s, err)
		}
		set[id] = true
	}
	return set, nil
}

func parseWindow(s string) (window, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return window{}, fmt.Errorf("%q is not HH:MM-HH:MM", s)
	}
	start, err := parseClock(a)
	if err != nil {
		return window{}, fmt.Errorf("%q: %w", s, err)
	}
	end, err := parseClock(b)
	if err != nil {
		return window{}, fmt.Errorf("%q: %w", s, err)
	}
	if start == end {
		return window{}, fmt.Errorf("%q is empty", s)
	}
	return window{start, end}, nil
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("%q is not a time of day HH:MM", s)
	}
	return hh*60 + mm, nil
}

// Shares reports whether model is shared with other peers.
func (p *Policy) Shares(model string) bool {
	if matchAny(p.Local, model) {
		return false
	}
	return len(p.Share) == 0 || matchAny(p.Share, model)
}

func matchAny(patterns []string, name string) bool {
	for _, pat := range patterns {
		if ok, _ := path.Match(pat, name); ok {
			return true
		}
	}
	return false
}

// InHours reports whether t is within the hours of service.
func (p *Policy) InHours(t time.Time) bool {
	t = t.In(p.loc)
	if !p.days[t.Weekday()] {
		return false
	}
	if len(p.windows) == 0 {
		return true
	}
	m := t.Hour()*60 + t.Minute()
	for _, w := range p.windows {
		if w.start < w.end && m >= w.start && m < w.end {
			return true
		}
		if w.start > w.end && (m >= w.start || m < w.end) {
			return true
		}
	}
	return false
}

// Offers reports the yes/no settings, unset meaning yes.
func (p *Policy) Offers() (hostExperts, seedShards, relay bool) {
	yes := func(b *bool) bool { return b == nil || *b }
	return yes(p.HostExperts), yes(p.SeedShards), yes(p.Relay)
}

// Warnings are things a valid policy says that may not do what its author
// meant, given whether membership certificates are checked (members).
func (p *Policy) Warnings(members bool) []string {
	var out []string
	if p.who[Members] && !members {
		out = append(out, "who includes members but no --trust-issuer is set: no peer is a member")
	}
	if len(p.Allow) > 0 && !p.who[Allowlist] && !p.who[Anyone] {
		out = append(out, "allow lists peers but who does not include allowlist")
	}
	if p.Limits.TokensPerHour > 0 && p.Limits.MaxTokens == 0 {
		out = append(out, "tokens_per_hour without max_tokens: one request may take the whole hour's tokens")
	}
	for _, pat := range p.Share {
		if matchAny(p.Local, pat) {
			out = append(out, fmt.Sprintf("share %q is also kept local", pat))
		}
	}
	return out
}
