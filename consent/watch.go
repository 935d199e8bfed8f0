package consent

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// File keeps an Enforcer's policy in step with a policy file: Reload reads
// it again (the peer calls it on SIGHUP) and Run reloads it whenever the
// file changes. A file that fails to load leaves the policy in force as it
// was, and the log says why.
type File struct {
	Path     string
	Enforcer *Enforcer
	// Members says whether membership certificates are checked (for the
	// warnings logged on load).
	Members bool
	// Changed, when set, runs after a new policy is in force.
	Changed func(*Policy)
	Log     *slog.Logger

	mu   sync.Mutex
	last []byte // the file's bytes when last loaded
}

// Reload reads the file and, when it is valid and differs from what is in
// force, puts it in force.
func (f *File) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	log := f.Log
	if log == nil {
		log = slog.Default()
	}
	data, err := os.ReadFile(f.Path)
	if err == nil && f.last != nil && bytes.Equal(data, f.last) {
		return nil
	}
	p, err := Load(f.Path)
	if err != nil {
		log.Warn("policy not reloaded: the previous one stays in force", "file", f.Path, "err", err)
		return err
	}
	f.last = data
	f.Enforcer.SetPolicy(p)
	for _, w := range p.Warnings(f.Members) {
		log.Warn("policy: "+w, "file", f.Path)
	}
	log.Info("policy in force", "file", f.Path)
	if f.Changed != nil {
		f.Changed(p)
	}
	return nil
}

// Run watches the file's directory (editors replace files rather than
// write them in place) and reloads on every change to the file, until ctx
// ends. Changes within 100 ms are read once.
func (f *File) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	dir, name := filepath.Split(filepath.Clean(f.Path))
	if dir == "" {
		dir = "."
	}
	if err := w.Add(dir); err != nil {
		return err
	}
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Base(ev.Name) == name && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
				debounce = time.After(100 * time.Millisecond)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			if f.Log != nil {
				f.Log.Warn("policy watch", "err", err)
			}
		case <-debounce:
			debounce = nil
			_ = f.Reload()
		}
	}
}
