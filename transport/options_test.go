package transport

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultNetworkOptions(t *testing.T) {
	o := DefaultNetworkOptions()
	want := NetworkOptions{
		Type: TCP, MaxConns: 2, MaxIdle: 16, IdleTimeout: time.Minute, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		MaxInbound: 1024, MaxFrameSize: 8 << 20,
	}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("defaults = %+v, want %+v", o, want)
	}
	if err := o.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	custom := NetworkOptions{MaxConns: 5}.WithDefaults()
	if custom.MaxConns != 5 || custom.MaxIdle != 16 {
		t.Fatalf("WithDefaults overwrote a set field or missed a default: %+v", custom)
	}
}

func TestValidateNamesFieldAndValue(t *testing.T) {
	tests := []struct {
		opts NetworkOptions
		want string
	}{
		{NetworkOptions{MaxConns: -1}, "transport: MaxConns -1 must be >= 0"},
		{NetworkOptions{MaxIdle: -2}, "transport: MaxIdle -2 must be >= 0"},
		{NetworkOptions{IdleTimeout: -time.Second}, "transport: IdleTimeout -1s must be 0 (default) or at least 10ms"},
		{NetworkOptions{IdleTimeout: time.Millisecond}, "transport: IdleTimeout 1ms must be 0 (default) or at least 10ms"},
		{NetworkOptions{ReadTimeout: -time.Second}, "transport: ReadTimeout -1s must be >= 0"},
		{NetworkOptions{WriteTimeout: -time.Second}, "transport: WriteTimeout -1s must be >= 0"},
		{NetworkOptions{MaxInbound: -3}, "transport: MaxInbound -3 must be >= 0"},
		{NetworkOptions{MaxFrameSize: 10}, "transport: MaxFrameSize 10 must be"},
		{NetworkOptions{MaxFrameSize: 2 << 30}, "transport: MaxFrameSize 2147483648 must be"},
		{NetworkOptions{Type: 7}, "transport: Type 7"},
		{NetworkOptions{BindAddr: "nope"}, `transport: BindAddr "nope"`},
	}
	for _, tc := range tests {
		err := tc.opts.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want prefix %q", tc.opts, err, tc.want)
		}
	}
	if err := (NetworkOptions{}).Validate(); err != nil {
		t.Errorf("zero options must be valid (all defaults): %v", err)
	}
}

func TestListenRejectsBadInput(t *testing.T) {
	if _, err := Listen(NetworkOptions{MaxConns: -1}, "127.0.0.1:0", nil); err == nil || !strings.Contains(err.Error(), "MaxConns -1") {
		t.Errorf("Listen with invalid options: %v", err)
	}
	for _, adv := range []string{"", "127.0.0.1", ":0", strings.Repeat("a", 300) + ":1"} {
		if tr, err := Listen(NetworkOptions{}, adv, nil); err == nil {
			_ = tr.Close()
			t.Errorf("Listen(advertise %q) succeeded", adv)
		}
	}
}

func TestListenPortZeroSharesTCPAndUDP(t *testing.T) {
	tr, _ := newTestTransport(t, testOptions())
	if strings.HasSuffix(tr.Addr(), ":0") || !strings.HasPrefix(tr.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr = %q, want 127.0.0.1 with the chosen port", tr.Addr())
	}
	if tr.tcpLn.Addr().String() != tr.udpConn.LocalAddr().String() {
		t.Fatalf("TCP %v and UDP %v differ", tr.tcpLn.Addr(), tr.udpConn.LocalAddr())
	}
}
