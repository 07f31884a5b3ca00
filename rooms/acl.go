package rooms

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"

	"homeserver/pdu"
)

// ServerAllowed applies the room's m.room.server_acl to a server name (its
// port ignored), as the spec's rules say: no ACL allows everyone; an IP
// literal is denied when allow_ip_literals is false; then deny globs, then
// allow globs; anything else is denied.
func (s *Service) ServerAllowed(ctx context.Context, roomID, server string) (bool, error) {
	st, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{{Type: "m.room.server_acl"}})
	if err != nil || len(st) == 0 {
		return true, err
	}
	var ev struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(st[0].JSON, &ev) != nil {
		return true, nil
	}
	return ACLAllows(ev.Content, server), nil
}

// ACLAllows applies an m.room.server_acl content to a server name.
func ACLAllows(content json.RawMessage, server string) bool {
	var c struct {
		Allow           []any `json:"allow"`
		Deny            []any `json:"deny"`
		AllowIPLiterals any   `json:"allow_ip_literals"`
	}
	_ = json.Unmarshal(content, &c)
	host := hostOf(server)
	if b, ok := c.AllowIPLiterals.(bool); ok && !b {
		if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
			return false
		}
	}
	for _, d := range c.Deny {
		if g, ok := d.(string); ok && globMatch(g, host) {
			return false
		}
	}
	for _, a := range c.Allow {
		if g, ok := a.(string); ok && globMatch(g, host) {
			return true
		}
	}
	return false
}

// hostOf drops a server name's port: "[::1]:8448" -> "[::1]".
func hostOf(server string) string {
	if strings.HasPrefix(server, "[") {
		if i := strings.Index(server, "]"); i >= 0 {
			return server[:i+1]
		}
		return server
	}
	if i := strings.LastIndexByte(server, ':'); i >= 0 {
		return server[:i]
	}
	return server
}

// globMatch matches a glob (`*` any run, `?` one character) against the
// whole value, case-insensitively.
func globMatch(pattern, value string) bool {
	p, v := []rune(strings.ToLower(pattern)), []rune(strings.ToLower(value))
	pi, vi, star, mark := 0, 0, -1, 0
	for vi < len(v) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == v[vi]):
			pi++
			vi++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, vi
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			vi = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
