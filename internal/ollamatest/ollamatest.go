package ollamatest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"
)

// EnvBinary names the environment variable that holds the path of the ollama binary.
const EnvBinary = "MWPEER_OLLAMA"

// Time limits of the harness.
const (
	startTimeout  = 60 * time.Second
	stopTimeout   = 15 * time.Second
	createTimeout = 3 * time.Minute
	logTailLines  = 40
)

// Binary returns the path of the ollama binary named by $MWPEER_OLLAMA, and skips
// the test when it is unset or not an executable file.
func Binary(t testing.TB) string {
	t.Helper()
	const how = "set " + EnvBinary + " to an ollama binary (built by ../shared/tools/build-ollama) to run this test"
	path := os.Getenv(EnvBinary)
	if path == "" {
		t.Skip(how)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		t.Skipf("%s=%q is not an executable file: %s", EnvBinary, path, how)
	}
	return path
}

// Server is a running `ollama serve`.
type Server struct {
	URL    string // base URL, such as http://127.0.0.1:41234
	Binary string // the ollama binary
	Log    string // path of the file that holds the server's output

	client *api.Client
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	err    error         // the process's exit status, once done is closed
}

// Start runs `ollama serve` on a free loopback port with a fresh model store and
// home directory, waits until it answers, and stops it when the test ends. It
// skips the test when no binary is configured (see Binary).
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir() // registered before the stop below, so removed after it
	for _, d := range []string{"models", "home"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	addr, err := freeAddr()
	if err != nil {
		t.Fatalf("ollamatest: find a free port: %v", err)
	}
	logFile, err := os.Create(filepath.Join(dir, "ollama.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child holds its own descriptor

	s := &Server{
		URL:    "http://" + addr,
		Binary: bin,
		Log:    logFile.Name(),
		done:   make(chan struct{}),
	}
	base, _ := url.Parse(s.URL)
	s.client = api.NewClient(base, http.DefaultClient)

	s.cmd = exec.Command(bin, "serve")
	s.cmd.Env = s.env(addr, filepath.Join(dir, "models"), filepath.Join(dir, "home"))
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("ollamatest: start %s serve: %v", bin, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() { // also shows the log when Start itself fails below
		s.stop(t)
		if t.Failed() {
			s.logTail(t)
		}
	})

	if err := s.waitReady(); err != nil {
		t.Fatalf("ollamatest: %v", err)
	}
	return s
}

// env is the server's environment: ours without any OLLAMA_ variable, plus its own.
func (s *Server) env(addr, models, home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OLLAMA_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	return append(env,
		"OLLAMA_HOST="+addr,
		"OLLAMA_MODELS="+models,
		"HOME="+home,
		"OLLAMA_NOPRUNE=1",
	)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitReady polls /api/version until it answers, the process exits or time runs out.
func (s *Server) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, time.Second)
		_, err := s.client.Version(attempt)
		cancelAttempt()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("ollama serve exited before answering: %v", s.err)
		case <-ctx.Done():
			return fmt.Errorf("ollama serve did not answer %s/api/version within %v: %v", s.URL, startTimeout, err)
		case <-tick.C:
		}
	}
}

// stop interrupts the server, which stops its runners, and kills it if it lingers.
func (s *Server) stop(t testing.TB) {
	if err := s.cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.cmd.Process.Kill()
	}
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		t.Logf("ollamatest: ollama serve ignored an interrupt for %v; killing it", stopTimeout)
		s.cmd.Process.Kill()
		<-s.done
	}
}

// logTail writes the last lines of the server's log to the test log.
func (s *Server) logTail(t testing.TB) {
	data, err := os.ReadFile(s.Log)
	if err != nil {
		t.Logf("ollamatest: read server log: %v", err)
		return
	}
	data = bytes.TrimRight(data, "\n")
	if len(data) == 0 {
		t.Logf("ollamatest: the server log %s is empty", s.Log)
		return
	}
	lines := bytes.Split(data, []byte("\n"))
	lines = lines[max(0, len(lines)-logTailLines):]
	t.Logf("ollamatest: last %d lines of %s:\n%s", len(lines), s.Log, bytes.Join(lines, []byte("\n")))
}

// parameters are set on every model the harness creates; a request's options
// override them. Tiny test models run fastest on one thread: with more, ggml's
// threads wait for one another after every operation, which on a busy machine
// (parallel tests, CI) turned 1500 tokens/s into 10.
var parameters = map[string]any{"num_thread": 1}

// Client returns an API client of the server.
func (s *Server) Client() *api.Client { return s.client }

// CreateModel imports the GGUF file ggufPath as the model name, as
// `ollama create name -f Modelfile` with `FROM ./file.gguf` would, plus the
// parameter num_thread 1: tiny models run fastest on one thread, and a
// request's options can still ask for more.
func (s *Server) CreateModel(t testing.TB, name, ggufPath string) {
	t.Helper()
	if err := s.create(name, ggufPath, ""); err != nil {
		t.Fatalf("ollamatest: %v", err)
	}
}

// CreateQuantized imports the GGUF file ggufPath as the model name, quantized to
// quantization (such as "q8_0" or "q4_K_M"). Ollama quantizes only F16 and F32
// sources whose general.file_type says so.
func (s *Server) CreateQuantized(t testing.TB, name, ggufPath, quantization string) {
	t.Helper()
	if err := s.create(name, ggufPath, quantization); err != nil {
		t.Fatalf("ollamatest: %v", err)
	}
}

func (s *Server) create(name, ggufPath, quantization string) error {
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	digest, err := s.upload(ctx, ggufPath)
	if err != nil {
		return fmt.Errorf("upload %s: %w", ggufPath, err)
	}
	req := &api.CreateRequest{
		Model:      name,
		Files:      map[string]string{"model.gguf": digest},
		Quantize:   quantization,
		Parameters: parameters,
	}
	var last string
	err = s.client.Create(ctx, req, func(p api.ProgressResponse) error {
		last = p.Status
		return nil
	})
	if err != nil {
		return fmt.Errorf("create %s from %s: %w", name, ggufPath, err)
	}
	if last != "success" {
		return fmt.Errorf("create %s from %s: ended with status %q", name, ggufPath, last)
	}
	return nil
}

// upload sends the file at path as a blob and returns its digest.
func (s *Server) upload(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if err := s.client.CreateBlob(ctx, digest, f); err != nil {
		return "", err
	}
	return digest, nil
}
