package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/imageimport/image-import-operator/internal/imageexport"
)

// export serves the image store read-only to the Glance shim, as an export
// pod: `importer export --dir=/var/lib/image-store --token-sha256=...`.
// Exit codes: 0 once idle, 2 on bad flags, 1 when it cannot serve.
func export(args []string) int {
	fs := flag.NewFlagSet("importer export", flag.ContinueOnError)
	var (
		s      imageexport.Server
		listen string
	)
	fs.StringVar(&s.Dir, "dir", "", "The image store: image ID is DIR/ID.")
	fs.StringVar(&listen, "listen", fmt.Sprintf(":%d", imageexport.Port), "Address to serve on.")
	fs.StringVar(&s.TokenSHA256, "token-sha256", "", "Hex sha256 of the bearer token every request must carry.")
	fs.DurationVar(&s.IdleTimeout, "idle-timeout", 10*time.Minute, "Exit after this long without a request.")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if s.Dir == "" || s.TokenSHA256 == "" {
		fmt.Fprintln(os.Stderr, "importer export: --dir and --token-sha256 are required")
		return 2
	}
	s.Log = logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, nil))
	l, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "importer export:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	s.Log.Info("Serving the image store", "dir", s.Dir, "address", l.Addr().String())
	if err := s.Serve(ctx, l); err != nil {
		fmt.Fprintln(os.Stderr, "importer export:", err)
		return 1
	}
	return 0
}
