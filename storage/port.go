package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// TableCount is the number of rows of one table.
type TableCount struct {
	Table string
	Rows  int64
}

// PostgresIsEmpty reports whether the database dsn points at has no tables
// in its current schema: port-db refuses to touch anything else.
func PostgresIsEmpty(ctx context.Context, dsn string) (bool, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return false, fmt.Errorf("storage: open postgres: %w", err)
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()`).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("storage: inspecting postgres: %w", err)
	}
	return n == 0, nil
}

// Port copies every table of src (SQLite) into dst (PostgreSQL at the same
// schema version, with no rows yet) in one transaction, then checks that the
// row counts agree. Tables are copied in creation order, which the
// migrations keep parents-before-children for foreign keys.
func Port(ctx context.Context, src, dst *DB, progress func(table string, rows int64)) ([]TableCount, error) {
	if src.engine != SQLite || dst.engine != Postgres {
		return nil, fmt.Errorf("storage: port copies SQLite into PostgreSQL")
	}
	tables, err := sqliteTables(ctx, src.w.DB)
	if err != nil {
		return nil, err
	}
	var counts []TableCount
	err = dst.tx(ctx, "port", func(tx *txn) error {
		for _, t := range tables {
			n, err := copyTable(ctx, src.w.DB, tx.Tx, t)
			if err != nil {
				return fmt.Errorf("storage: port %s: %w", t, err)
			}
			counts = append(counts, TableCount{Table: t, Rows: n})
			if progress != nil {
				progress(t, n)
			}
		}
		return resetSequences(ctx, tx.Tx)
	})
	if err != nil {
		return nil, err
	}
	for _, c := range counts {
		var n int64
		if err := dst.w.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+quoteIdent(c.Table)).Scan(&n); err != nil {
			return nil, fmt.Errorf("storage: verifying %s: %w", c.Table, err)
		}
		if n != c.Rows {
			return nil, fmt.Errorf("storage: verifying %s: %d rows in PostgreSQL, %d in SQLite", c.Table, n, c.Rows)
		}
	}
	return counts, nil
}

// sqliteTables lists the tables to copy. SQLite's full-text index of
// search is in a file of its own, left behind: PostgreSQL's search reader
// indexes the log afresh.
func sqliteTables(ctx context.Context, db *sql.DB) ([]string, error) {
	rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master
		WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'goose_db_version' ORDER BY rowid`)
	if err != nil {
		return nil, fmt.Errorf("storage: listing tables: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, rows.Err()
}

// copyTable streams one table, converting SQLite's loose types to the
// PostgreSQL column types (SQLite stores booleans as integers).
func copyTable(ctx context.Context, src *sql.DB, dst *sql.Tx, table string) (int64, error) {
	cols, types, err := postgresColumns(ctx, dst, table)
	if err != nil {
		return 0, err
	}
	if len(cols) == 0 {
		return 0, fmt.Errorf("table missing in PostgreSQL")
	}
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = quoteIdent(c)
	}
	rows, err := src.QueryContext(ctx, `SELECT `+strings.Join(quoted, ", ")+` FROM `+quoteIdent(table))
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	const batch = 500
	var n int64
	var pending []any
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		nrows := len(pending) / len(cols)
		var sb strings.Builder
		sb.WriteString(`INSERT INTO ` + quoteIdent(table) + ` (` + strings.Join(quoted, ", ") + `) VALUES `)
		for r := range nrows {
			if r > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString("(")
			for c := range cols {
				if c > 0 {
					sb.WriteString(", ")
				}
				fmt.Fprintf(&sb, "$%d", r*len(cols)+c+1)
			}
			sb.WriteString(")")
		}
		if _, err := dst.ExecContext(ctx, sb.String(), pending...); err != nil {
			return err
		}
		pending = pending[:0]
		return nil
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		for i, v := range vals {
			pending = append(pending, convert(v, types[i]))
		}
		n++
		if n%batch == 0 {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return n, err
	}
	return n, flush()
}

func postgresColumns(ctx context.Context, tx *sql.Tx, table string) (cols, types []string, err error) {
	rows, err := tx.QueryContext(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 AND is_generated = 'NEVER'
		ORDER BY ordinal_position`, table)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var c, t string
		if err := rows.Scan(&c, &t); err != nil {
			return nil, nil, err
		}
		cols, types = append(cols, c), append(types, t)
	}
	return cols, types, rows.Err()
}

func convert(v any, pgType string) any {
	switch pgType {
	case "boolean":
		switch b := v.(type) {
		case int64:
			return b != 0
		case bool:
			return b
		}
	case "text", "character varying":
		if b, ok := v.([]byte); ok {
			return string(b)
		}
	}
	return v
}

// resetSequences moves every serial column's sequence past the copied rows.
func resetSequences(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'`)
	if err != nil {
		return err
	}
	var pairs [][2]string
	for rows.Next() {
		var t, c string
		if err := rows.Scan(&t, &c); err != nil {
			rows.Close()
			return err
		}
		pairs = append(pairs, [2]string{t, c})
	}
	rows.Close()
	for _, p := range pairs {
		q := fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', '%s'), COALESCE((SELECT MAX(%s) FROM %s), 0) + 1, false)`,
			p[0], p[1], quoteIdent(p[1]), quoteIdent(p[0]))
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("resetting sequence of %s.%s: %w", p[0], p[1], err)
		}
	}
	return nil
}

// quoteIdent quotes a table or column name read from the schema itself.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
