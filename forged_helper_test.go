package mwpeer

import (
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/record"

	"github.com/mwpeer/mwpeer/experts"
)

// sealUnchecked signs a without the size check Seal applies, so a test can
// produce what a hostile peer would.
func sealUnchecked(a *experts.Announcement, key crypto.PrivKey) ([]byte, error) {
	env, err := record.Seal(a, key)
	if err != nil {
		return nil, err
	}
	return env.Marshal()
}
