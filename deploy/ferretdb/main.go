// Command ferretdb-local runs FerretDB (MongoDB wire protocol over SQLite) for the local stack.
// Embedded as a library because `go install .../cmd/ferretdb` panics on a missing version.txt.
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // CPU and heap profiles on --debug-listen (bench-e2e --profile reads them)
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address for the MongoDB wire protocol")
	dataDir := flag.String("data-dir", "", "directory for the SQLite databases (created if missing)")
	debugListen := flag.String("debug-listen", "", "TCP address for Go's /debug/pprof (off when empty)")
	flag.Parse()

	if *dataDir == "" {
		log.Fatal("--data-dir is required")
	}
	abs, err := filepath.Abs(*dataDir)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		log.Fatal(err)
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
		Logger: slog.New(&lazyHandler{
			next: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}),
		}),
	})
	if err != nil {
		log.Fatal(err)
	}

	if *debugListen != "" {
		go func() { log.Print(http.ListenAndServe(*debugListen, nil)) }()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	log.Printf("ferretdb listening on %s, data in %s", *listen, abs)
	if err := f.Run(ctx); err != nil {
		log.Fatal(err)
	}
	log.Print("ferretdb stopped")
}
