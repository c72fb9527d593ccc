// Command shop serves the lambdadb example shop: pages and a JSON API over
// a lambdadb cluster, its handlers deployed and triggers created at start.
//
//	shop --lambdadb 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 --listen 127.0.0.1:8080
//
// See examples/shop/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"lambdadb/examples/shop"
)

func main() {
	nodes := flag.String("lambdadb", "127.0.0.1:7070", "the lambdadb nodes, `host:port,...` (the first is the client's base)")
	listen := flag.String("listen", "127.0.0.1:8080", "`address` to serve the shop on")
	handlers := flag.String("handlers", "bin/examples", "`folder` of shop-*.wasm to deploy (\"\": deploy nothing)")
	load := flag.Int("load", 0, "place this many random orders once set up")
	seed := flag.Uint64("seed", 1, "seed of --load's orders")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(log, strings.Split(*nodes, ","), *listen, *handlers, *load, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, nodes []string, listen, handlers string, load int, seed uint64) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := shop.New(shop.Config{Nodes: nodes, Handlers: handlers, Logger: log})
	if err != nil {
		return err
	}
	defer s.Close()
	// The cluster may still be electing leaders: retry the set-up a while.
	for attempt := 0; ; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err = s.Setup(sctx)
		cancel()
		if err == nil {
			break
		}
		if attempt == 5 || ctx.Err() != nil {
			return err
		}
		log.Info("set-up: retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("shop serving", "url", "http://"+ln.Addr().String()+"/")
	if load > 0 {
		start := time.Now()
		placed, oos, err := s.Load(ctx, load, seed)
		if err != nil {
			log.Warn("loading orders", "err", err)
		}
		log.Info("orders loaded", "placed", placed, "out_of_stock", oos, "took", time.Since(start).Round(time.Millisecond))
	}
	select {
	case <-ctx.Done():
	case err := <-done:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
