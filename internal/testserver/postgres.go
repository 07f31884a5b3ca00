package testserver

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// PostgresDatabase creates an empty database through the server that dsn (a
// postgres:// URL) points at, drops it when the test ends, and returns the
// homeserver.yaml database section (Synapse's psycopg2 shape) for it.
func PostgresDatabase(t testing.TB, dsn string) string {
	t.Helper()
	return postgresSection(t, dsn, CreatePostgresDB(t, dsn))
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
// it is dropped (with any connections still open) when the test ends.
func CreatePostgresDB(t testing.TB, dsn string) string {
	t.Helper()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("%s: %v", PostgresEnv, err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	name := "hs_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
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
