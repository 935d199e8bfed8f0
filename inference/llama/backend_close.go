package llama

import (
	"fmt"
	"sync"
	"time"
)

// closeWait bounds how long Backend.Close waits for the generations under
// way to end.
const closeWait = 30 * time.Second

// backendCloser makes Backend.Close idempotent.
type backendCloser struct {
	once sync.Once
	err  error
}

// Close stops b and releases its model, which b owns (NewBackend loaded
// it; NewModelBackend was handed it): it takes every generation slot, so
// that it waits for the generations under way to end (they end with their
// context) and turns later ones away with inference.ErrBusy, then closes
// the model. If generations still run after closeWait it returns an error
// and leaves the model open rather than pull its weights from under them.
// Close is idempotent.
func (b *Backend) Close() error {
	b.closer.once.Do(func() { b.closer.err = b.close() })
	return b.closer.err
}

func (b *Backend) close() error {
	t := time.NewTimer(closeWait)
	defer t.Stop()
	for range cap(b.slots) {
		select {
		case b.slots <- struct{}{}:
		case <-t.C:
			return fmt.Errorf("embedded: %s: generations still running after %v: model left open", b.opts.Name, closeWait)
		}
	}
	return b.model.Close()
}
