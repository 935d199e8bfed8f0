package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/net/html"
)

// Guard says who may use the HTTP API, so that a web page the user happens
// to open cannot: not through DNS rebinding (a name of the attacker's that
// resolves to 127.0.0.1 carries the attacker's name in the Host header), not
// through CORS (another origin's fetch is refused unless listed) and not
// through "simple" requests that skip CORS preflights (a POST must be JSON).
//
// The zero Guard admits Host headers that name loopback and the page's own
// origin only. Every request, admitted or not, is answered with headers
// that forbid framing and MIME sniffing.
type Guard struct {
	// Listen is the address the API listens on (host:port, as --http takes
	// it). Its host is accepted in the Host header besides loopback; when it
	// is unspecified (":8080", "0.0.0.0:8080", "[::]:8080") any IP address
	// is, since DNS rebinding needs a name and an address names no one else.
	Listen string
	// Hosts are more names accepted in the Host header, with or without a
	// port (the port is never checked): DNS names this machine is reached
	// by, or a reverse proxy's.
	Hosts []string
	// Origins are the browser origins (scheme://host[:port]) that may call
	// the API besides the page's own; "*" admits every origin and is
	// only ever set by the user.
	Origins []string
}

// SetGuard replaces the Guard of s (NewServer starts with the zero Guard).
// It fails on an origin ParseOrigin refuses. It is safe to call while s
// serves.
func (s *Server) SetGuard(g Guard) error {
	c, err := g.compile()
	if err != nil {
		return err
	}
	s.guard.Store(c)
	return nil
}

// ParseOrigin checks one entry of Guard.Origins and returns it as browsers
// send it in the Origin header: "*", or a lower-case scheme://host[:port]
// with no path and no default port.
func ParseOrigin(s string) (string, error) {
	if s == "*" {
		return s, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("origin %q: %v", s, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" || u.Host == "" || u.User != nil ||
		strings.TrimSuffix(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("origin %q: want scheme://host[:port] such as https://app.example:3000, or *", s)
	}
	return scheme + "://" + authority(scheme, u.Host), nil
}

// authority lower-cases host[:port] and drops the scheme's default port, as
// the Origin header does.
func authority(scheme, hostport string) string {
	hostport = strings.ToLower(hostport)
	if scheme == "http" {
		return strings.TrimSuffix(hostport, ":80")
	}
	if scheme == "https" {
		return strings.TrimSuffix(hostport, ":443")
	}
	return hostport
}

// guard is a Guard ready to check requests.
type guard struct {
	hosts     map[string]bool // names and canonical addresses
	anyIP     bool
	origins   map[string]bool
	anyOrigin bool
}

func (g Guard) compile() (*guard, error) {
	c := &guard{hosts: map[string]bool{}, origins: map[string]bool{}}
	if g.Listen != "" {
		host, _, err := net.SplitHostPort(g.Listen)
		if err != nil {
			host = g.Listen
		}
		if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); host == "" || err == nil && ip.IsUnspecified() {
			c.anyIP = true
		} else {
			c.hosts[hostName(host)] = true
		}
	}
	for _, h := range g.Hosts {
		if n := hostName(h); n != "" {
			c.hosts[n] = true
		}
	}
	for _, o := range g.Origins {
		o, err := ParseOrigin(strings.TrimSpace(o))
		if err != nil {
			return nil, err
		}
		c.anyOrigin = c.anyOrigin || o == "*"
		c.origins[o] = true
	}
	return c, nil
}

// hostName is the host of a Host header or a Guard entry in the form the
// guard compares: no port, lower case, no trailing dot, addresses
// canonical ("::1", not "0:0::1"; IPv4-mapped addresses as IPv4).
func hostName(hostport string) string {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().WithZone("").String()
	}
	return host
}

// hostAllowed says whether a Host header names this peer.
func (g *guard) hostAllowed(hostport string) bool {
	host := hostName(hostport)
	if host == "" {
		return false
	}
	// Browsers resolve localhost and its subdomains to loopback themselves
	// (RFC 6761), so these names cannot be rebound.
	if host == "localhost" || strings.HasSuffix(host, ".localhost") || g.hosts[host] {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && (ip.IsLoopback() || g.anyIP)
}

// sameOrigin says whether origin is the origin of a page this server
// served under the Host header host.
func sameOrigin(origin, host string) bool {
	scheme, rest, ok := strings.Cut(origin, "://")
	scheme = strings.ToLower(scheme)
	if !ok || scheme != "http" && scheme != "https" || strings.Contains(rest, "/") {
		return false
	}
	return authority(scheme, rest) == authority(scheme, host)
}

// crossSite says whether a request without an Origin header comes from
// another site's page, by its Fetch Metadata. A navigation (the user
// following a link, or a frame, which the Content-Security-Policy keeps
// empty) is no such request: it reads nothing for the page that started it.
func crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		navigate := r.Header.Get("Sec-Fetch-Mode") == "navigate"
		return !navigate || r.Method != http.MethodGet && r.Method != http.MethodHead
	}
	return false
}

// Headers every response carries.
const (
	// apiCSP is the policy of everything but the dashboard: JSON loads
	// nothing and runs nothing.
	apiCSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
	// exposed are the response headers a permitted page may read.
	exposed = "X-Mwpeer-Experts"
)

func secure(h http.Header) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", apiCSP)
	// Whether a request is refused depends on who asks.
	h.Add("Vary", "Origin")
}

// admit checks r's Host, Origin and Content-Type and answers CORS
// preflights. It writes the answer and returns false, or returns true with
// the CORS headers of an admitted cross-origin request set.
func (g *guard) admit(w http.ResponseWriter, r *http.Request) bool {
	if !g.hostAllowed(r.Host) {
		writeError(w, http.StatusForbidden, "forbidden_host", fmt.Sprintf(
			"Host %q does not name this peer; add it with --allowed-hosts if it should (this guards against DNS rebinding)", r.Host))
		return false
	}
	origin := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != ""
	switch {
	case origin == "":
		if crossSite(r) && !g.anyOrigin {
			writeError(w, http.StatusForbidden, "forbidden_origin",
				"cross-site request refused; allow the page's origin with --allowed-origins")
			return false
		}
	case sameOrigin(origin, r.Host):
		// The dashboard, or a page of a reverse proxy in front of it.
	case g.anyOrigin || g.origins[origin]:
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", exposed)
	default:
		writeError(w, http.StatusForbidden, "forbidden_origin", fmt.Sprintf(
			"origin %q may not use this API; allow it with --allowed-origins", origin))
		return false
	}
	if preflight {
		h := w.Header()
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
			h.Set("Access-Control-Allow-Headers", req) // the origin is trusted
		}
		if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
			h.Set("Access-Control-Allow-Private-Network", "true")
		}
		h.Set("Access-Control-Max-Age", "600")
		h.Add("Vary", "Access-Control-Request-Method")
		h.Add("Vary", "Access-Control-Request-Headers")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type",
				"request body must be Content-Type: application/json")
			return false
		}
	}
	return true
}

// pagePolicy is the Content-Security-Policy of an HTML page of ours: like
// apiCSP, but it may run its own inline scripts and styles (allowed by
// their SHA-256, so an injected one does not run), load its own files and
// call this API.
func pagePolicy(page []byte) string {
	var scripts, styles, scriptAttrs, styleAttrs []string
	hash := func(list *[]string, text string) {
		sum := sha256.Sum256([]byte(text))
		h := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !slices.Contains(*list, h) {
			*list = append(*list, h)
		}
	}
	z := html.NewTokenizer(bytes.NewReader(page))
	var in string // "script" or "style" while inside one
	for {
		switch z.Next() {
		case html.ErrorToken:
			return buildPolicy(scripts, styles, scriptAttrs, styleAttrs)
		case html.StartTagToken, html.SelfClosingTagToken:
			t := z.Token()
			if t.Data == "script" || t.Data == "style" {
				in = t.Data
			}
			for _, a := range t.Attr {
				switch {
				case a.Key == "style":
					hash(&styleAttrs, a.Val)
				case strings.HasPrefix(a.Key, "on"):
					hash(&scriptAttrs, a.Val)
				}
			}
		case html.TextToken:
			switch in {
			case "script":
				hash(&scripts, string(z.Text()))
			case "style":
				hash(&styles, string(z.Text()))
			}
		case html.EndTagToken:
			in = ""
		}
	}
}

func buildPolicy(scripts, styles, scriptAttrs, styleAttrs []string) string {
	src := func(inline, attrs []string) string {
		s := "'self'"
		if len(inline) > 0 {
			s += " " + strings.Join(inline, " ")
		}
		if len(attrs) > 0 {
			// Attributes (style="…", onclick="…") match only by hash,
			// which CSP calls 'unsafe-hashes'.
			s += " 'unsafe-hashes' " + strings.Join(attrs, " ")
		}
		return s
	}
	return "default-src 'none'; script-src " + src(scripts, scriptAttrs) + "; style-src " + src(styles, styleAttrs) +
		"; img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
}
