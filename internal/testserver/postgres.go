package testserver

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"homeserver/storage"
)

// PostgresDatabase creates an empty database through the server that dsn (a
// postgres:// URL) points at, drops it when the test ends, and returns the
// homeserver.yaml database section (Synapse's psycopg2 shape) for it.
func PostgresDatabase(t testing.TB, dsn string) string {
	t.Helper()
	return postgresSection(t, dsn, CreatePostgresDB(t, dsn))
}

// EmptyPostgresDatabase is PostgresDatabase without even the schema (for
// what must start from nothing, such as port-db's target).
func EmptyPostgresDatabase(t testing.TB, dsn string) string {
	t.Helper()
	return postgresSection(t, dsn, createPostgresDB(t, dsn, false))
}

// postgresSection is the database section for database name on the
// server of dsn.
func postgresSection(t testing.TB, dsn, name string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("%s: %v", PostgresEnv, err)
	}
	pass, _ := u.User.Password()
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	sslmode := u.Query().Get("sslmode")
	if sslmode == "" {
		sslmode = "disable"
	}
	return fmt.Sprintf("database:\n  name: psycopg2\n  args:\n    user: %q\n    password: %q\n    database: %q\n    host: %q\n    port: %s\n    sslmode: %q\n    cp_max: 8\n",
		u.User.Username(), pass, name, u.Hostname(), port, sslmode)
}

// CreatePostgresDB creates a uniquely named database and returns its name;
// it is dropped (with any connections still open) when the test ends. It
// is a copy of a template database that holds the current schema (made
// once, and kept between runs under a name derived from the migrations),
// so that each test server starts without applying every migration again.
func CreatePostgresDB(t testing.TB, dsn string) string {
	t.Helper()
	return createPostgresDB(t, dsn, true)
}

func createPostgresDB(t testing.TB, dsn string, withSchema bool) string {
	t.Helper()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("%s: %v", PostgresEnv, err)
	}
	tmpl := "template1"
	if withSchema {
		if tmpl, err = schemaTemplate(dsn, admin); err != nil {
			admin.Close()
			t.Fatalf("creating the template database: %v", err)
		}
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	name := "hs_test_" + hex.EncodeToString(b)
	for i := 0; ; i++ {
		_, err = admin.Exec("CREATE DATABASE " + name + " TEMPLATE " + tmpl)
		// Copies of one template at the same moment can collide on its
		// lock ("being accessed by other users"): try again shortly.
		if err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		admin.Close()
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		// A leftover throwaway database is not a test failure: log it.
		var err error
		for range 5 {
			if _, err = admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("dropping test database %s: %v", name, err)
	})
	return name
}

// PostgresDSNFor returns dsn pointing at database name instead.
func PostgresDSNFor(dsn, name string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	u.Path = "/" + name
	return u.String()
}

var templates sync.Map // dsn → template database name, once made in this process

// schemaTemplate returns the name of a database holding the schema the
// storage package's migrations make, creating it when no run has yet:
// its name is a hash of the migrations, so a schema change makes a new one.
func schemaTemplate(dsn string, admin *sql.DB) (string, error) {
	if name, ok := templates.Load(dsn); ok {
		return name.(string), nil
	}
	name := "hs_tmpl_" + storage.SchemaHash()[:16]
	ctx := context.Background()
	conn, err := admin.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	// Test processes run in parallel: one makes the template, the others
	// wait for it.
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(7165238)`); err != nil {
		return "", err
	}
	defer func() { _, _ = conn.ExecContext(ctx, `SELECT pg_advisory_unlock(7165238)`) }()
	var ready bool
	if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)`, name).Scan(&ready); err != nil {
		return "", err
	}
	if !ready {
		// A half-made one (a process killed while making it) goes first.
		if _, err := conn.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			return "", err
		}
		if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			return "", err
		}
		db, err := storage.Open(ctx, storage.Options{Engine: storage.Postgres, DSN: PostgresDSNFor(dsn, name),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return "", fmt.Errorf("migrating the template: %w", err)
		}
		if err := db.Close(); err != nil {
			return "", err
		}
		if _, err := conn.ExecContext(ctx, "ALTER DATABASE "+name+" WITH IS_TEMPLATE true"); err != nil {
			return "", err
		}
	}
	templates.Store(dsn, name)
	return name, nil
}
