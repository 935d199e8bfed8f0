package routing

import (
	"encoding/json"
	"time"
)

// JSON: Candidate and Scored carry durations as milliseconds, rtt_ms,
// ttft_ms, reported_ttft_ms and (Scored) first_token_ms (floats), next to
// the fields their tags name, and the RTT once more with its source as
// "rtt": {"ms", "source"}.

// candidateFields is Candidate without its methods, for encoding/json.
type candidateFields Candidate

type candidateJSON struct {
	candidateFields
	RTTMs  float64 `json:"rtt_ms"`
	TTFTMs float64 `json:"ttft_ms"`
	// ReportedTTFTMs is omitted when the peer reports nothing.
	ReportedTTFTMs float64 `json:"reported_ttft_ms,omitempty"`
	// RTTInput repeats the RTT with its source, {"ms": 1.2, "source":
	// "measured"}; ms is null when the RTT is unknown. Decoding ignores it.
	RTTInput rttJSON `json:"rtt"`
}

type rttJSON struct {
	Ms     *float64 `json:"ms"`
	Source string   `json:"source"`
}

func (c Candidate) toJSON() candidateJSON {
	j := candidateJSON{candidateFields: candidateFields(c), RTTMs: millis(c.RTT), TTFTMs: millis(c.TTFT), ReportedTTFTMs: millis(c.ReportedTTFT)}
	j.RTTInput.Source = c.Sources.RTT
	if c.RTTKnown || c.Local {
		ms := j.RTTMs
		j.RTTInput.Ms = &ms
	}
	return j
}

func (j candidateJSON) candidate() Candidate {
	c := Candidate(j.candidateFields)
	c.RTT, c.TTFT, c.ReportedTTFT = fromMillis(j.RTTMs), fromMillis(j.TTFTMs), fromMillis(j.ReportedTTFTMs)
	return c
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fromMillis(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// MarshalJSON encodes c with its durations in milliseconds.
func (c Candidate) MarshalJSON() ([]byte, error) { return json.Marshal(c.toJSON()) }

// UnmarshalJSON decodes what MarshalJSON encodes.
func (c *Candidate) UnmarshalJSON(b []byte) error {
	var j candidateJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*c = j.candidate()
	return nil
}

type scoredJSON struct {
	candidateJSON
	Score        float64 `json:"score"`
	Parts        Parts   `json:"parts"`
	FirstTokenMs float64 `json:"first_token_ms"`
}

// MarshalJSON encodes s flat: the candidate's fields, score and parts.
func (s Scored) MarshalJSON() ([]byte, error) {
	return json.Marshal(scoredJSON{candidateJSON: s.Candidate.toJSON(), Score: s.Score, Parts: s.Parts, FirstTokenMs: millis(s.FirstToken)})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (s *Scored) UnmarshalJSON(b []byte) error {
	var j scoredJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Scored{Candidate: j.candidateJSON.candidate(), Score: j.Score, Parts: j.Parts, FirstToken: fromMillis(j.FirstTokenMs)}
	return nil
}
