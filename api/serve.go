package api

import (
	"context"
	"net"
	"net/http"
	"time"
)

// Serve serves h on ln (with NewHTTPServer's limits) until ctx ends, then
// shuts down, giving requests in flight a second before closing them.
func Serve(ctx context.Context, h http.Handler, ln net.Listener) error {
	srv := NewHTTPServer(h)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !IsClosed(err) {
		return err
	}
	return nil
}
