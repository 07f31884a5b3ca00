// Command homeserver runs the Matrix homeserver, generates its configuration
// and registers users, with Synapse's command-line habits.
//
//	homeserver --server-name example.org -c homeserver.yaml --generate-config
//	homeserver -c homeserver.yaml
//	homeserver register-user -c homeserver.yaml [-u NAME] [-p PASSWORD] [-a] [URL]
//	homeserver version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"homeserver/config"
	"homeserver/server"
)

// version is set at build time with -ldflags "-X main.version=..."; the VCS
// revision is appended when the build has one.
var version = "0.1.0-dev"

func main() {
	// SIGINT and SIGTERM cancel ctx: the server then shuts down gracefully,
	// and register-user abandons its prompt or request.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// Once ctx is cancelled, restore the default handling, so that a second
	// signal ends the process at once instead of waiting for a slow shutdown.
	context.AfterFunc(ctx, stop)
	setGCPercent()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// defaultGCPercent is the garbage collector's target unless GOGC says
// otherwise: the live heap is small (tens of MiB), so at Go's default of
// 100 the collector ran every few hundred sends and took a quarter of a
// send's CPU; at 200 sequential sends cost 25% less CPU, their p99 fell
// from 4.6 to 3.6 ms, and the peak RSS grew by 4 MiB (BENCHMARKS.md).
const defaultGCPercent = 200

func setGCPercent() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// run is the whole command, minus the process: ctx ends a running server
// (main cancels it on SIGINT or SIGTERM), and the result is the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version", "--version", "-v":
			fmt.Fprintln(stdout, "homeserver", fullVersion())
			return 0
		case "register-user":
			return registerUser(ctx, args[1:], stdin, stdout, stderr)
		case "port-db":
			return portDB(ctx, args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("homeserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var configPath, serverName, instance string
	var generate, enableRegistration bool
	var port, httpPort int
	fs.StringVar(&configPath, "config-path", "", "path to homeserver.yaml")
	fs.StringVar(&configPath, "c", "", "shorthand for --config-path")
	fs.StringVar(&serverName, "server-name", "", "server name for --generate-config")
	fs.StringVar(&serverName, "H", "", "shorthand for --server-name")
	fs.BoolVar(&generate, "generate-config", false, "write a new config and signing key, then exit")
	fs.BoolVar(&enableRegistration, "enable-registration", false, "with --generate-config: open registration (dummy flow)")
	fs.IntVar(&port, "port", 0, "with --generate-config: client listener port (default 8008)")
	fs.String("report-stats", "no", "accepted for Synapse compatibility; statistics are never reported")
	fs.StringVar(&instance, "instance-name", "", "this process's name when several serve one deployment (PostgreSQL); see run_background_tasks_on")
	fs.IntVar(&httpPort, "http-port", 0, "serve the client listeners on this port instead of the configured one (one port per process)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage:
  homeserver --server-name NAME -c homeserver.yaml --generate-config
  homeserver -c homeserver.yaml [--instance-name NAME --http-port PORT]
  homeserver register-user -c homeserver.yaml [-u USER] [-p PASSWORD] [-a] [SERVER_URL]
  homeserver version`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if configPath == "" {
		fmt.Fprintln(stderr, "homeserver: --config-path (-c) is required")
		fs.Usage()
		return 2
	}
	if generate {
		if serverName == "" {
			fmt.Fprintln(stderr, "homeserver: --generate-config needs --server-name")
			return 2
		}
		err := config.Generate(config.GenerateOptions{
			ServerName: serverName, ConfigPath: configPath, EnableRegistration: enableRegistration, Port: port,
		})
		if err != nil {
			fmt.Fprintln(stderr, "homeserver:", err)
			return 1
		}
		fmt.Fprintf(stdout, "A config file has been generated in %s for server name %q.\nEdit it, then start the server with: homeserver -c %s\n",
			configPath, serverName, configPath)
		return 0
	}
	return serve(ctx, configPath, processOptions{instance: instance, httpPort: httpPort}, stderr)
}

// processOptions are the settings of one process that the shared
// configuration file cannot hold.
type processOptions struct {
	instance string
	httpPort int
}

// apply sets them on the loaded configuration.
func (o processOptions) apply(cfg *config.Config) error {
	cfg.InstanceName = o.instance
	if o.instance != "" && cfg.PidFile != "" {
		cfg.PidFile += "." + o.instance
	}
	if o.httpPort == 0 {
		return nil
	}
	if o.httpPort < 0 || o.httpPort > 65535 {
		return fmt.Errorf("--http-port %d: not a port", o.httpPort)
	}
	n := 0
	for i, l := range cfg.Listeners {
		if l.Type == "http" && l.Serves("client") {
			cfg.Listeners[i].Port = o.httpPort
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("--http-port: %s has no http listener with the client resource", cfg.Path)
	}
	return nil
}

// serve runs the server configured in configPath until ctx is cancelled,
// then shuts it down gracefully: listeners stop accepting, requests in
// flight get up to 30 seconds to finish, and the database is closed. It logs
// to stderr and returns the exit status: 0 after a clean shutdown, 1 if the
// configuration is invalid or the server fails to start or to stop cleanly.
func serve(ctx context.Context, configPath string, opts processOptions, stderr io.Writer) int {
	cfg, warnings, err := config.Load(configPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := opts.apply(cfg); err != nil {
		fmt.Fprintln(stderr, "homeserver:", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.SlogLevel()}))
	for _, w := range warnings {
		log.Warn("config: " + w)
	}

	if addr := os.Getenv(pprofEnv); addr != "" {
		stopPprof, err := startPprof(addr, log)
		if err != nil {
			log.Error("start-up failed", "err", err)
			return 1
		}
		defer stopPprof()
	}
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	// The pid file is complete before the listeners answer: whoever sees
	// the server up can read it.
	if cfg.PidFile != "" {
		if err := os.WriteFile(cfg.PidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			log.Warn("writing pid_file", "path", cfg.PidFile, "err", err)
		} else {
			defer os.Remove(cfg.PidFile)
		}
	}
	if err := srv.Start(); err != nil {
		log.Error("start-up failed", "err", err)
		_ = srv.Shutdown(context.Background())
		return 1
	}
	log.Info("homeserver running", "server_name", cfg.ServerName, "version", fullVersion())
	<-ctx.Done()
	log.Info("shutting down", "reason", context.Cause(ctx))
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

func fullVersion() string {
	v := version
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "+" + s.Value[:12]
			}
		}
	}
	return v
}
