// Package freeport finds loopback addresses for test and benchmark nodes. A GridKV node binds
// TCP and UDP on the same port, so the port must be free for both.
package freeport

import (
	"errors"
	"net"
)

// Addr returns a 127.0.0.1 address whose port was free for both TCP and UDP a moment ago.
// Another process may take it before the caller binds it: callers retry on a bind conflict.
func Addr() (string, error) {
	for attempt := 0; attempt < 32; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue // the UDP side of this port is taken: try another
		}
		u.Close()
		return addr, nil
	}
	return "", errors.New("freeport: no port free for both TCP and UDP after 32 tries")
}
