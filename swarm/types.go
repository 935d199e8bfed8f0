package swarm

import "github.com/mwpeer/mwpeer/inference"

// AnyModel in a request lets routing pick among every model in the swarm.
const AnyModel = "auto"

// Model is one model the swarm serves and how many peers serve it.
type Model struct {
	ID      string   `json:"id"`
	Peers   int      `json:"peers"`
	Local   bool     `json:"local"`
	Engines []string `json:"engines,omitempty"`
	// Context is the smallest context length (tokens) its servers announce
	// (0: none says).
	Context int `json:"context,omitempty"`
	// Capabilities is what at least one of its servers announces it can do
	// (completion, tools, vision, embedding, thinking, json); routing sends
	// a request only to a server that can do all the request needs.
	Capabilities []string `json:"capabilities,omitempty"`
}

// Query is a request as the swarm sees it: the backend request plus
// mwpeer's own options.
type Query struct {
	Request  inference.Request
	Strategy string   // fastest, confidence or blend; "" for the default
	K        int      // experts asked in parallel; 0 lets routing choose
	Domains  []string // overrides the classifier when set
	// Verify asks for an answer that two peers serving the same model
	// digest produced token for token at temperature 0 (see
	// inference.DispatchConfig.Verify); Strategy and K then do not apply.
	Verify bool
	// Answering, when set, hears the model an expert runs (for AnyModel,
	// the one routing chose for it) before that expert's first chunk
	// reaches emit, so a stream can name the model that answers.
	Answering func(expert, model string)
}

// Answer is the outcome of Complete.
type Answer struct {
	// Model is the model that answered: the one asked for, or the one
	// routing chose for AnyModel.
	Model     string
	Text      string
	Final     inference.Final
	Experts   []string // every peer that contributed, in order
	Agreement *float64 // blend: how far the others agreed with the answer
	Failovers int
	Verified  bool // two peers agreed on it token for token (Experts names them)
}
