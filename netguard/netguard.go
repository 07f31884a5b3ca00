// Package netguard makes outbound connections only to addresses an
// administrator allows: the defence against server-side request forgery
// for everything the server fetches on someone else's say-so (URL
// previews, federation, push gateways).
//
// A Guard resolves a host name once, refuses the connection if any of its
// addresses is blocked, and then connects to the addresses it checked, never
// to the name again: a second DNS answer (DNS rebinding) cannot differ from
// the one that was checked. The socket's final address is checked once more
// just before connecting.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrBlocked is wrapped by the errors of connections refused because of
// the address they would reach.
var ErrBlocked = errors.New("netguard: IP address blocked")

// Resolver looks host names up; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options configures a Guard.
type Options struct {
	// Block lists the ranges never connected to, unless also in Allow.
	// IPv4-mapped IPv6 addresses are checked as the IPv4 address they map.
	Block []netip.Prefix
	// Allow lists exceptions to Block.
	Allow []netip.Prefix
	// Resolver looks host names up; nil for net.DefaultResolver.
	Resolver Resolver
	// Dialer connects; nil for a dialer with a 10s timeout. It is copied:
	// the Guard adds its own address check to the copy.
	Dialer *net.Dialer
}

// Guard dials TCP connections to allowed addresses only. It is safe for
// concurrent use.
type Guard struct {
	block, allow []netip.Prefix
	resolver     Resolver
	dialer       net.Dialer
}

// New returns a Guard. Invalid and unspecified addresses (0.0.0.0, ::) are
// refused whatever the lists say: connecting to them reaches the local host.
func New(o Options) *Guard {
	g := &Guard{block: normalize(o.Block), allow: normalize(o.Allow), resolver: o.Resolver}
	if g.resolver == nil {
		g.resolver = net.DefaultResolver
	}
	if o.Dialer != nil {
		g.dialer = *o.Dialer
	} else {
		g.dialer = net.Dialer{Timeout: 10 * time.Second}
	}
	// Checked again on the address the socket is about to connect to, so a
	// path that bypasses the resolution above still cannot reach a blocked
	// address.
	control, controlCtx := g.dialer.Control, g.dialer.ControlContext
	g.dialer.Control = nil
	g.dialer.ControlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: unparsable address %q", ErrBlocked, address)
		}
		if !g.Allowed(ap.Addr()) {
			return fmt.Errorf("%w: %s", ErrBlocked, ap.Addr())
		}
		switch {
		case controlCtx != nil:
			return controlCtx(ctx, network, address, c)
		case control != nil:
			return control(network, address, c)
		}
		return nil
	}
	return g
}

// normalize writes IPv4-mapped prefixes as IPv4 prefixes, since addresses
// are unmapped before they are checked, and masks host bits.
func normalize(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

// Allowed reports whether connections to a are allowed: Allow overrides
// Block, and IPv4-mapped IPv6 addresses are checked as IPv4 addresses.
func (g *Guard) Allowed(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	if !a.IsValid() || a.IsUnspecified() {
		return false
	}
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	for _, p := range g.block {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// DialContext connects to address ("host:port", host a name or an IP
// literal) like net.Dialer.DialContext. It resolves host, fails with an
// error wrapping ErrBlocked if any of its addresses is blocked (a name
// resolving to both a public and a private address is refused whole), and
// otherwise tries the checked addresses in turn.
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("netguard: invalid port %q", portStr)
	}
	var ips []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{a}
	} else {
		ips, err = g.resolver.LookupNetIP(ctx, lookupNetwork(network), host)
		if err != nil {
			return nil, fmt.Errorf("netguard: resolving %s: %w", host, err)
		}
		if len(ips) == 0 {
			return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
	}
	for _, ip := range ips {
		if !g.Allowed(ip) {
			return nil, fmt.Errorf("%w: %s resolves to %s", ErrBlocked, host, ip)
		}
	}
	var errs []error
	for _, ip := range ips {
		c, err := g.dialer.DialContext(ctx, network, netip.AddrPortFrom(ip.WithZone("").Unmap(), uint16(port)).String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if errors.Is(err, ErrBlocked) || ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// lookupNetwork maps a dial network to the matching lookup network.
func lookupNetwork(network string) string {
	switch {
	case strings.HasSuffix(network, "4"):
		return "ip4"
	case strings.HasSuffix(network, "6"):
		return "ip6"
	}
	return "ip"
}

// DefaultBlocklist returns the ranges Synapse blocks by default
// (ip_range_blacklist): loopback, private, carrier-grade NAT, link-local,
// documentation and benchmarking networks, multicast and the unspecified
// addresses. IPv4-mapped IPv6 addresses need no entry of their own: they
// are checked as the IPv4 address they map.
func DefaultBlocklist() []netip.Prefix {
	ranges := []string{
		"0.0.0.0/8",
		"127.0.0.0/8",
		"10.0.0.0/8",
		"172.16.0.0/12",
		"192.168.0.0/16",
		"100.64.0.0/10",
		"192.0.0.0/24",
		"169.254.0.0/16",
		"192.88.99.0/24",
		"198.18.0.0/15",
		"192.0.2.0/24",
		"198.51.100.0/24",
		"203.0.113.0/24",
		"224.0.0.0/4",
		"::/128",
		"::1/128",
		"fe80::/10",
		"fc00::/7",
		"2001:db8::/32",
		"ff00::/8",
		"fec0::/10",
	}
	out := make([]netip.Prefix, len(ranges))
	for i, r := range ranges {
		out[i] = netip.MustParsePrefix(r)
	}
	return out
}
