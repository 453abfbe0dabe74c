// Package ports picks loopback addresses for the examples' tests.
//
// A GridKV node binds TCP and UDP on one port. A port the kernel hands out for ":0" comes
// from the ephemeral range, the same range outgoing connections take their local ports
// from: while a test starts twenty nodes one after another, the connections of the first
// ones can take a port picked for a later one. Ports below that range are only ever taken by
// an explicit bind, so Loopback picks them there.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
)

// Ports are picked from [low, high): below Linux's default ephemeral range (32768-60999)
// and above the usual registered services.
const (
	low  = 20000
	high = 32768
)

// Loopback returns n distinct 127.0.0.1 addresses whose ports were free for both TCP and UDP
// a moment ago.
func Loopback(n int) ([]string, error) {
	seen := map[int]bool{}
	var addrs []string
	for tries := 0; len(addrs) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("ports: found only %d of %d free ports in [%d, %d)", len(addrs), n, low, high)
		}
		port := low + rand.IntN(high-low)
		if seen[port] {
			continue
		}
		seen[port] = true
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if free(addr) {
			addrs = append(addrs, addr)
		}
	}
	return addrs, nil
}

// free reports whether addr can be bound for both TCP and UDP.
func free(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}
