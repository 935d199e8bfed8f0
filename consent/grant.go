package consent

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A consent token (a grant) is a capability this peer signs for another:
// that peer may use a model here, up to a number of tokens, until a date.
// Its text is
//
//	mwgrant1.<base64url(JSON claims)>.<base64url(signature)>
//
// signed with the issuing peer's identity key over grantContext followed by
// the claims' bytes. Only the issuer can check it (it is the one serving),
// and only the issuer counts what was used of it.
const (
	grantPrefix  = "mwgrant1."
	grantContext = "mwpeer consent token v1\x00"
	// MaxGrantSize caps a token's text (inference.MaxCredential is larger).
	MaxGrantSize = 1024
)

// Errors of a grant that does not admit its holder.
var (
	ErrBadGrant     = errors.New("malformed consent token")
	ErrForgedGrant  = errors.New("consent token not signed by this peer")
	ErrGrantHolder  = errors.New("consent token issued to another peer")
	ErrGrantModel   = errors.New("consent token is for another model")
	ErrGrantExpired = errors.New("consent token expired")
	ErrGrantEarly   = errors.New("consent token not valid yet")
)

// Claims are what a grant allows.
type Claims struct {
	ID        string `json:"id"`  // random, 16 hex digits: what its use is counted under
	Issuer    string `json:"iss"` // the serving peer that signed it
	Subject   string `json:"sub"` // the peer it lets in
	Model     string `json:"model"`
	Tokens    int64  `json:"tokens"` // prompt and completion tokens, over its life
	NotBefore int64  `json:"nbf"`    // Unix seconds
	Expires   int64  `json:"exp"`    // Unix seconds
}

// Grant is a parsed token.
type Grant struct {
	Claims
	Text string // the token as presented
	sig  []byte
	data []byte // the claims' bytes as signed
}

// Issue signs a grant with key (the issuing peer's identity key) letting
// subject use model (a name, or a path.Match pattern such as "llama3*")
// for tokens tokens from now until until.
func Issue(key crypto.PrivKey, subject peer.ID, model string, tokens int64, now, until time.Time) (string, error) {
	issuer, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return "", err
	}
	switch {
	case subject == "":
		return "", errors.New("no peer to grant to")
	case model == "":
		return "", errors.New("no model")
	case tokens <= 0:
		return "", errors.New("tokens must be positive")
	case !until.After(now):
		return "", fmt.Errorf("until %s is not in the future", until.Format(time.RFC3339))
	}
	if _, err := path.Match(model, ""); err != nil {
		return "", fmt.Errorf("bad model pattern %q", model)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	c := Claims{ID: hex.EncodeToString(id[:]), Issuer: issuer.String(), Subject: subject.String(), Model: model,
		Tokens: tokens, NotBefore: now.Unix(), Expires: until.Unix()}
	data, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	sig, err := key.Sign(append([]byte(grantContext), data...))
	if err != nil {
		return "", err
	}
	text := grantPrefix + base64.RawURLEncoding.EncodeToString(data) + "." + base64.RawURLEncoding.EncodeToString(sig)
	if len(text) > MaxGrantSize {
		return "", fmt.Errorf("token of %d bytes is longer than %d", len(text), MaxGrantSize)
	}
	return text, nil
}

// ParseGrant reads a token's claims without checking its signature: what
// the holder does to know where to present it.
func ParseGrant(text string) (*Grant, error) {
	text = strings.TrimSpace(text)
	if len(text) > MaxGrantSize || !strings.HasPrefix(text, grantPrefix) {
		return nil, ErrBadGrant
	}
	body, sig64, ok := strings.Cut(text[len(grantPrefix):], ".")
	if !ok {
		return nil, ErrBadGrant
	}
	data, err1 := base64.RawURLEncoding.DecodeString(body)
	sig, err2 := base64.RawURLEncoding.DecodeString(sig64)
	if err1 != nil || err2 != nil {
		return nil, ErrBadGrant
	}
	g := &Grant{Text: text, sig: sig, data: data}
	if err := json.Unmarshal(data, &g.Claims); err != nil {
		return nil, ErrBadGrant
	}
	if len(g.ID) != 16 || g.Tokens <= 0 || g.Model == "" || g.Expires <= g.NotBefore {
		return nil, ErrBadGrant
	}
	if _, err := peer.Decode(g.Issuer); err != nil {
		return nil, ErrBadGrant
	}
	if _, err := peer.Decode(g.Subject); err != nil {
		return nil, ErrBadGrant
	}
	return g, nil
}

// Verify checks that the grant was signed by issuer (whose public key is
// pub), that holder is its subject, and that it is within its dates at now.
// It does not check the model or what is left of it.
func (g *Grant) Verify(pub crypto.PubKey, holder peer.ID, now time.Time) error {
	issuer, err := peer.IDFromPublicKey(pub)
	if err != nil {
		return err
	}
	if g.Issuer != issuer.String() {
		return ErrForgedGrant
	}
	ok, err := pub.Verify(append([]byte(grantContext), g.data...), g.sig)
	if err != nil || !ok {
		return ErrForgedGrant
	}
	if g.Subject != holder.String() {
		return ErrGrantHolder
	}
	if now.Unix() < g.NotBefore {
		return ErrGrantEarly
	}
	if now.Unix() >= g.Expires {
		return ErrGrantExpired
	}
	return nil
}

// Covers reports whether the grant is for model.
func (g *Grant) Covers(model string) bool {
	ok, _ := path.Match(g.Model, model)
	return ok
}

// Wallet holds the grants this peer was given, to present each to the peer
// that issued it.
type Wallet struct {
	grants []*Grant
}

// NewWallet parses the tokens; a malformed one is an error naming it.
func NewWallet(tokens []string) (*Wallet, error) {
	w := &Wallet{}
	for i, t := range tokens {
		g, err := ParseGrant(t)
		if err != nil {
			return nil, fmt.Errorf("grant %d: %w", i+1, err)
		}
		w.grants = append(w.grants, g)
	}
	return w, nil
}

// For returns the token to present to server for model, or nil: the
// unexpired grant of that issuer covering model that expires last.
func (w *Wallet) For(server peer.ID, model string, now time.Time) []byte {
	if w == nil {
		return nil
	}
	var best *Grant
	for _, g := range w.grants {
		if g.Issuer == server.String() && g.Covers(model) && now.Unix() < g.Expires && (best == nil || g.Expires > best.Expires) {
			best = g
		}
	}
	if best == nil {
		return nil
	}
	return []byte(best.Text)
}
