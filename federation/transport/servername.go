package transport

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// serverName is a parsed server name (appendices, "Server Name").
type serverName struct {
	host string     // DNS name, or the IP literal without brackets
	ip   netip.Addr // valid when host is an IP literal
	port int        // 0 when the name has none
}

// maxServerNameLen bounds a whole server name: the grammar's 255-character
// DNS name, brackets or a port on top are what no real name needs.
const maxServerNameLen = 255 + len(":65535")

// parseServerName checks name against the spec's grammar:
//
//	server_name = hostname [ ":" port ]
//	hostname    = IPv4address / "[" IPv6address "]" / dns-name
//
// It is a little stricter than the grammar where the grammar admits names
// that would be read differently by different resolvers: DNS labels must be
// non-empty (no "a..b", no trailing dot), a name whose last label is
// numeric must be a valid IPv4 literal (so "1.2.3" or "01.2.3.4" are not
// left to a resolver that might read them as addresses), and ports must be
// in 1-65535.
func parseServerName(name string) (serverName, error) {
	if name == "" {
		return serverName{}, errors.New("empty server name")
	}
	if len(name) > maxServerNameLen {
		return serverName{}, fmt.Errorf("server name is %d bytes long", len(name))
	}
	var sn serverName
	host, rest := name, ""
	if strings.HasPrefix(name, "[") {
		end := strings.IndexByte(name, ']')
		if end < 0 {
			return serverName{}, fmt.Errorf("server name %q: unterminated IPv6 literal", name)
		}
		host, rest = name[1:end], name[end+1:]
		if len(host) < 2 || len(host) > 45 || strings.Trim(host, "0123456789abcdefABCDEF:.") != "" {
			return serverName{}, fmt.Errorf("server name %q: invalid IPv6 literal", name)
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return serverName{}, fmt.Errorf("server name %q: invalid IPv6 literal", name)
		}
		sn.ip = a
	} else if i := strings.IndexByte(name, ':'); i >= 0 {
		host, rest = name[:i], name[i:]
	}
	if rest != "" {
		p, ok := strings.CutPrefix(rest, ":")
		if !ok || p == "" || len(p) > 5 || strings.Trim(p, "0123456789") != "" {
			return serverName{}, fmt.Errorf("server name %q: invalid port", name)
		}
		n, _ := strconv.Atoi(p)
		if n < 1 || n > 65535 {
			return serverName{}, fmt.Errorf("server name %q: port out of range", name)
		}
		sn.port = n
	}
	sn.host = host
	if sn.ip.IsValid() {
		return sn, nil
	}
	if err := checkDNSName(host); err != nil {
		return serverName{}, fmt.Errorf("server name %q: %w", name, err)
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		sn.ip = a
	}
	return sn, nil
}

func checkDNSName(host string) error {
	if host == "" {
		return errors.New("empty hostname")
	}
	if len(host) > 255 {
		return errors.New("hostname longer than 255 characters")
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" {
			return errors.New("empty DNS label")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("invalid character %q in hostname", c)
			}
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is4() {
			return errors.New("numeric hostname that is not an IPv4 address")
		}
	}
	return nil
}

// ValidServerName reports whether name is a server name as the spec's
// grammar defines it (see parseServerName for the few stricter points).
func ValidServerName(name string) bool {
	_, err := parseServerName(name)
	return err == nil
}

// hostPort joins a hostname (an IPv6 literal without brackets) and port.
func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
