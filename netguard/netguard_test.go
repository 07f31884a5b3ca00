package netguard_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"homeserver/netguard"
)

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, v := range s {
		out = append(out, netip.MustParsePrefix(v))
	}
	return out
}

func TestAllowed(t *testing.T) {
	def := netguard.New(netguard.Options{Block: netguard.DefaultBlocklist()})
	allow := netguard.New(netguard.Options{
		Block: netguard.DefaultBlocklist(),
		Allow: prefixes("127.0.0.1/32", "::ffff:10.1.0.0/112", "fd00::1/128"),
	})
	open := netguard.New(netguard.Options{})
	mappedBlock := netguard.New(netguard.Options{Block: prefixes("::ffff:8.8.8.0/120")})
	tests := []struct {
		g    *netguard.Guard
		addr string
		want bool
	}{
		{def, "8.8.8.8", true},
		{def, "2001:4860:4860::8888", true},
		{def, "127.0.0.1", false},
		{def, "127.5.6.7", false},
		{def, "10.0.0.1", false},
		{def, "172.16.0.1", false},
		{def, "172.32.0.1", true},
		{def, "192.168.1.1", false},
		{def, "100.64.0.1", false},
		{def, "169.254.169.254", false},
		{def, "198.51.100.7", false},
		{def, "224.0.0.1", false},
		{def, "0.1.2.3", false},
		{def, "::1", false},
		{def, "fe80::1", false},
		{def, "fe80::1%eth0", false},
		{def, "fd12::1", false},
		{def, "2001:db8::1", false},
		{def, "ff02::1", false},
		{def, "fec0::1", false},
		{def, "::ffff:127.0.0.1", false},
		{def, "::ffff:10.1.2.3", false},
		{def, "::ffff:8.8.8.8", true},
		{def, "0.0.0.0", false},
		{def, "::", false},
		{allow, "127.0.0.1", true},
		{allow, "::ffff:127.0.0.1", true},
		{allow, "127.0.0.2", false},
		{allow, "10.1.2.3", true}, // mapped prefix in Allow applies to IPv4
		{allow, "10.2.0.1", false},
		{allow, "fd00::1", true},
		{allow, "fd00::2", false},
		{open, "127.0.0.1", true},
		{open, "10.0.0.1", true},
		{open, "0.0.0.0", false}, // always refused
		{open, "::", false},
		{mappedBlock, "8.8.8.8", false},
		{mappedBlock, "8.8.4.4", true},
	}
	for _, tt := range tests {
		if got := tt.g.Allowed(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("Allowed(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	if def.Allowed(netip.Addr{}) {
		t.Error("zero Addr allowed")
	}
}

func TestDefaultBlocklistFresh(t *testing.T) {
	a := netguard.DefaultBlocklist()
	a[0] = netip.MustParsePrefix("1.2.3.0/24")
	if netguard.DefaultBlocklist()[0] == a[0] {
		t.Error("DefaultBlocklist shares its slice")
	}
}

// listen starts a TCP server on 127.0.0.1 counting its connections.
func listen(t *testing.T) (port string, accepted *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted = new(atomic.Int32)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	_, port, _ = net.SplitHostPort(l.Addr().String())
	return port, accepted
}

func TestDialContext(t *testing.T) {
	port, accepted := listen(t)
	res := fakeResolver{
		"good.test":    {netip.MustParseAddr("127.0.0.1")},
		"mixed.test":   {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.1.2.3")},
		"mapped.test":  {netip.MustParseAddr("::ffff:10.1.2.3")},
		"blocked.test": {netip.MustParseAddr("127.0.0.2")},
		// The first address refuses connections; the second is tried.
		"fallback.test": {netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.1")},
		"empty.test":    {},
	}
	g := netguard.New(netguard.Options{
		Block:    netguard.DefaultBlocklist(),
		Allow:    prefixes("127.0.0.1/32", "127.0.0.3/32"),
		Resolver: res,
	})
	tests := []struct {
		addr    string
		blocked bool
		ok      bool
	}{
		{"good.test:" + port, false, true},
		{"127.0.0.1:" + port, false, true},
		{"[::ffff:127.0.0.1]:" + port, false, true},
		{"fallback.test:" + port, false, true},
		{"mixed.test:" + port, true, false},
		{"mapped.test:" + port, true, false},
		{"blocked.test:" + port, true, false},
		{"127.0.0.2:" + port, true, false},
		{"[::1]:" + port, true, false},
		{"0.0.0.0:" + port, true, false},
		{"[::ffff:10.1.2.3]:" + port, true, false},
		{"nowhere.test:" + port, false, false},
		{"empty.test:" + port, false, false},
		{"good.test", false, false},
		{"good.test:http", false, false},
		{"good.test:70000", false, false},
	}
	var connected int32
	for _, tt := range tests {
		// The listener counts accepts in its own goroutine: wait for those
		// of the earlier successful dials, so that a late one is not taken
		// for a connection to a blocked address.
		for deadline := time.Now().Add(5 * time.Second); accepted.Load() < connected && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		before := accepted.Load()
		c, err := g.DialContext(context.Background(), "tcp", tt.addr)
		if c != nil {
			connected++
			c.Close()
		}
		if (err == nil) != tt.ok || errors.Is(err, netguard.ErrBlocked) != tt.blocked {
			t.Errorf("%s: err = %v, want ok %v, blocked %v", tt.addr, err, tt.ok, tt.blocked)
		}
		if tt.blocked && accepted.Load() != before {
			t.Errorf("%s: blocked address was connected to", tt.addr)
		}
	}
	var dnsErr *net.DNSError
	if _, err := g.DialContext(context.Background(), "tcp", "nowhere.test:"+port); !errors.As(err, &dnsErr) {
		t.Errorf("unresolvable: %v is not a *net.DNSError", err)
	}
}

// The guard's own Control check runs alongside a caller's Control.
func TestDialerControlKept(t *testing.T) {
	port, _ := listen(t)
	var called atomic.Int32
	g := netguard.New(netguard.Options{
		Dialer: &net.Dialer{Timeout: time.Second, Control: func(string, string, syscall.RawConn) error {
			called.Add(1)
			return nil
		}},
	})
	c, err := g.DialContext(context.Background(), "tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if called.Load() != 1 {
		t.Errorf("caller's Control called %d times", called.Load())
	}
}

func TestDialContextCancelled(t *testing.T) {
	g := netguard.New(netguard.Options{Resolver: fakeResolver{}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// 192.0.2.1 (TEST-NET-1) is not blocked here, and never answers: only
	// the cancelled context ends the dial.
	if _, err := g.DialContext(ctx, "tcp", "192.0.2.1:80"); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
