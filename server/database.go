package server

import (
	"strconv"
	"strings"

	"homeserver/config"
	"homeserver/storage"
)

// StorageOptions maps Synapse's database section onto storage.Options.
func StorageOptions(db config.Database) storage.Options {
	switch db.Name {
	case "psycopg2", "postgres":
		return storage.Options{
			Engine: storage.Postgres, DSN: postgresDSN(db.Args),
			ReadConns: db.Args.CPMax, MinConns: db.Args.CPMin,
		}
	default:
		return storage.Options{Engine: storage.SQLite, Path: db.Args.Database, ReadConns: db.Args.CPMax}
	}
}

// postgresDSN builds a libpq key=value connection string from the args
// psycopg2 would have been given; unset keys keep libpq's defaults (the
// local socket, the current user).
func postgresDSN(a config.DatabaseArgs) string {
	var parts []string
	add := func(k, v string) {
		if v == "" {
			return
		}
		v = strings.ReplaceAll(v, `\`, `\\`)
		v = strings.ReplaceAll(v, `'`, `\'`)
		parts = append(parts, k+"='"+v+"'")
	}
	add("dbname", a.Database)
	add("user", a.User)
	add("password", a.Password)
	add("host", a.Host)
	if a.Port != 0 {
		add("port", strconv.Itoa(a.Port))
	}
	add("sslmode", a.SSLMode)
	return strings.Join(parts, " ")
}
