package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// pprofEnv names the environment variable that turns the profiler on:
// HOMESERVER_PPROF=127.0.0.1:6060 serves net/http/pprof there. It is off
// unless set, and only a loopback address is accepted, since profiles show
// memory contents and a CPU profile costs the server while it runs.
const pprofEnv = "HOMESERVER_PPROF"

// startPprof serves the profiler on addr (a loopback host:port) until
// the returned stop is called.
func startPprof(addr string, log *slog.Logger) (stop func(), err error) {
	_, stop, err = startPprofAddr(addr, log)
	return stop, err
}

// startPprofAddr is startPprof that also returns the address bound.
func startPprofAddr(addr string, log *slog.Logger) (bound string, stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("%s=%q: %w", pprofEnv, addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", nil, fmt.Errorf("%s=%q: only a loopback address is allowed", pprofEnv, addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", pprofEnv, err)
	}
	// A mux of its own: the profiler never reaches the public listeners.
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof listener stopped", "err", err)
		}
	}()
	log.Warn("profiler enabled", "addr", "http://"+l.Addr().String()+"/debug/pprof/")
	return l.Addr().String(), func() { _ = srv.Close() }, nil
}
