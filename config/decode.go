package config

import (
	"fmt"
	"math"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decoder copies a yaml.Node tree into a struct by hand instead of using
// yaml's own decoding, for three reasons: every error can name the dotted
// key it is about, unknown keys become warnings, and fields absent from the
// file keep the defaults already in the struct.
type decoder struct {
	file     string
	warnings []string
}

func (d *decoder) errorf(path, format string, args ...any) error {
	if path == "" {
		return fmt.Errorf("%s: %s", d.file, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("%s: %s: %s", d.file, path, fmt.Sprintf(format, args...))
}

func (d *decoder) warnf(path, format string, args ...any) {
	d.warnings = append(d.warnings, fmt.Sprintf("%s: %s: %s", d.file, path, fmt.Sprintf(format, args...)))
}

// decode stores n into v, which must be addressable. A null node leaves v
// untouched, so "key:" with no value means "use the default".
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	n = resolveAlias(n)
	if isNull(n) {
		return nil
	}
	if u, ok := v.Addr().Interface().(yaml.Unmarshaler); ok {
		if err := u.UnmarshalYAML(n); err != nil {
			return fmt.Errorf("%s: %s: %w", d.file, path, err)
		}
		return nil
	}

	switch v.Kind() {
	case reflect.Struct:
		return d.decodeStruct(n, v, path)

	case reflect.Pointer:
		// An optional value (federation_verify_certificates): set only
		// when the key is.
		p := reflect.New(v.Type().Elem())
		if err := d.decode(n, p.Elem(), path); err != nil {
			return err
		}
		v.Set(p)
		return nil

	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.errorf(path, "want a list, got %s", describe(n))
		}
		// An explicit empty list stays non-nil: for some keys (such as
		// federation_domain_whitelist) [] and "unset" mean different things.
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil

	case reflect.Map:
		// Maps are free-form (extra_well_known_client_content), so no key
		// checks. Their contents end up in JSON responses, so they are built
		// from JSON-compatible types only.
		if n.Kind != yaml.MappingNode {
			return d.errorf(path, "want a mapping, got %s", describe(n))
		}
		if v.Type().Key().Kind() == reflect.String && v.Type().Elem().Kind() != reflect.Interface {
			// A typed map (server name -> address, key ID -> key): each
			// value is decoded and checked like a field.
			pairs, err := d.mappingPairs(n, path)
			if err != nil {
				return err
			}
			m := reflect.MakeMapWithSize(v.Type(), len(pairs))
			for _, p := range pairs {
				ev := reflect.New(v.Type().Elem()).Elem()
				if err := d.decode(p.val, ev, joinPath(path, p.key.Value)); err != nil {
					return err
				}
				m.SetMapIndex(reflect.ValueOf(p.key.Value).Convert(v.Type().Key()), ev)
			}
			v.Set(m)
			return nil
		}
		m, err := d.jsonValue(n, path)
		if err != nil {
			return err
		}
		mv := reflect.ValueOf(m)
		if !mv.Type().AssignableTo(v.Type()) {
			return d.errorf(path, "internal error: cannot decode into %s", v.Type())
		}
		v.Set(mv)
		return nil
	}

	if n.Kind != yaml.ScalarNode {
		return d.errorf(path, "want a single value, got %s", describe(n))
	}
	switch v.Kind() {
	case reflect.String:
		// Any scalar is accepted, so default_room_version: 10 works unquoted.
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if err := n.Decode(&b); err != nil {
			return d.errorf(path, "want true or false, got %s", describe(n))
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if err := n.Decode(&i); err != nil || v.OverflowInt(i) {
			return d.errorf(path, "want an integer, got %s", describe(n))
		}
		v.SetInt(i)
	case reflect.Float32, reflect.Float64:
		var f float64
		if err := n.Decode(&f); err != nil {
			return d.errorf(path, "want a number, got %s", describe(n))
		}
		v.SetFloat(f)
	default:
		// Only reachable if a field of an unsupported type is added to Config.
		return d.errorf(path, "internal error: cannot decode into %s", v.Type())
	}
	return nil
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.errorf(path, "want a mapping, got %s", describe(n))
	}
	fields := yamlFields(v.Type())
	pairs, err := d.mappingPairs(n, path)
	if err != nil {
		return err
	}
	for _, p := range pairs {
		sub := joinPath(path, p.key.Value)
		i, ok := fields[p.key.Value]
		if !ok {
			msg := fmt.Sprintf("unknown key (line %d), ignored", p.key.Line)
			if s := suggest(p.key.Value, fields); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			d.warnf(sub, "%s", msg)
			continue
		}
		if err := d.decode(p.val, v.Field(i), sub); err != nil {
			return err
		}
	}
	return nil
}

// jsonValue converts n into the types encoding/json produces, because
// yaml's own decoding into any yields map[any]any for non-string keys and
// time.Time for dates, neither of which encode as the admin would expect.
func (d *decoder) jsonValue(n *yaml.Node, path string) (any, error) {
	n = resolveAlias(n)
	switch n.Kind {
	case yaml.MappingNode:
		pairs, err := d.mappingPairs(n, path)
		if err != nil {
			return nil, err
		}
		m := make(map[string]any, len(pairs))
		for _, p := range pairs {
			v, err := d.jsonValue(p.val, joinPath(path, p.key.Value))
			if err != nil {
				return nil, err
			}
			m[p.key.Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, item := range n.Content {
			v, err := d.jsonValue(item, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			s[i] = v
		}
		return s, nil
	}
	switch n.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		err := n.Decode(&b)
		return b, err
	case "!!int", "!!float":
		var f float64
		if err := n.Decode(&f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, d.errorf(path, "%q is not a number JSON can represent", n.Value)
		}
		if n.ShortTag() == "!!int" {
			var i int64
			if n.Decode(&i) == nil {
				return i, nil
			}
		}
		return f, nil
	default:
		// Strings, and also timestamps and the like, which JSON only has as strings.
		return n.Value, nil
	}
}

type pair struct{ key, val *yaml.Node }

// mappingPairs lists the key/value pairs of a mapping, expanding YAML merge
// keys ("<<: *anchor") and rejecting duplicate keys, which yaml.v3 would
// otherwise let through silently when reading into a Node.
func (d *decoder) mappingPairs(n *yaml.Node, path string) ([]pair, error) {
	seen := make(map[string]int)
	var out []pair
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, val)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return nil, d.errorf(path, "line %d: keys must be plain strings", k.Line)
		}
		if line, dup := seen[k.Value]; dup {
			return nil, d.errorf(joinPath(path, k.Value), "duplicate key (lines %d and %d)", line, k.Line)
		}
		seen[k.Value] = k.Line
		out = append(out, pair{k, val})
	}
	// Keys written in the mapping itself override merged ones, and earlier
	// merge sources override later ones, as the YAML merge spec says.
	for _, m := range merges {
		m = resolveAlias(m)
		sources := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			sources = m.Content
		}
		for _, src := range sources {
			src = resolveAlias(src)
			if src.Kind != yaml.MappingNode {
				return nil, d.errorf(path, "line %d: merge (<<) needs a mapping, got %s", src.Line, describe(src))
			}
			merged, err := d.mappingPairs(src, path)
			if err != nil {
				return nil, err
			}
			for _, p := range merged {
				if _, ok := seen[p.key.Value]; !ok {
					seen[p.key.Value] = p.key.Line
					out = append(out, p)
				}
			}
		}
	}
	return out, nil
}

// yamlFields maps the yaml key of each field of struct type t to its index.
func yamlFields(t reflect.Type) map[string]int {
	fields := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			fields[name] = i
		}
	}
	return fields
}

// suggest returns the known key closest to an unknown one, if it is close
// enough to be a likely typo.
func suggest(key string, fields map[string]int) string {
	best, bestDist := "", 3
	for name := range fields {
		if dist := editDistance(key, name); dist < bestDist || dist == bestDist && best != "" && name < best {
			best, bestDist = name, dist
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node holds, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	n = resolveAlias(n)
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// oneLine folds yaml's multi-line error lists, since every config error is
// reported on a single line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
