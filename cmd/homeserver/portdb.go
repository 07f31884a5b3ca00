package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"homeserver/config"
	"homeserver/server"
	"homeserver/storage"
)

// portDB is Synapse's synapse_port_db: it copies a stopped SQLite homeserver
// into the empty PostgreSQL database that homeserver.yaml names.
func portDB(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("port-db", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sqlitePath, configPath string
	fs.StringVar(&sqlitePath, "sqlite-database", "", "the SQLite database to copy (the server must be stopped)")
	fs.StringVar(&configPath, "config-path", "", "homeserver.yaml whose database section names the PostgreSQL target")
	fs.StringVar(&configPath, "c", "", "shorthand for --config-path")
	fs.StringVar(&configPath, "postgres-config", "", "alias of --config-path, as in synapse_port_db")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: homeserver port-db --sqlite-database homeserver.db -c homeserver.yaml")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if sqlitePath == "" || configPath == "" {
		fs.Usage()
		return 2
	}
	if _, err := os.Stat(sqlitePath); err != nil {
		fmt.Fprintln(stderr, "port-db:", err)
		return 1
	}
	cfg, _, err := config.Load(configPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	target := server.StorageOptions(cfg.Database)
	if target.Engine != storage.Postgres {
		fmt.Fprintf(stderr, "port-db: %s: database.name must be psycopg2 or postgres (the target), got %q\n", configPath, cfg.Database.Name)
		return 1
	}
	empty, err := storage.PostgresIsEmpty(ctx, target.DSN)
	if err != nil {
		fmt.Fprintln(stderr, "port-db:", err)
		return 1
	}
	if !empty {
		fmt.Fprintf(stderr, "port-db: the PostgreSQL database %q is not empty; refusing to touch it\n", cfg.Database.Args.Database)
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	src, err := storage.Open(ctx, storage.Options{Engine: storage.SQLite, Path: sqlitePath, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "port-db:", err)
		return 1
	}
	defer src.Close()
	target.Logger = log
	dst, err := storage.Open(ctx, target)
	if err != nil {
		fmt.Fprintln(stderr, "port-db:", err)
		return 1
	}
	defer dst.Close()
	counts, err := storage.Port(ctx, src, dst, func(table string, rows int64) {
		fmt.Fprintf(stdout, "copied %-24s %d rows\n", table, rows)
	})
	if err != nil {
		fmt.Fprintln(stderr, "port-db:", err)
		return 1
	}
	var total int64
	for _, c := range counts {
		total += c.Rows
	}
	fmt.Fprintf(stdout, "Ported %d tables (%d rows); row counts verified. Start the server with: homeserver -c %s\n", len(counts), total, configPath)
	return 0
}
