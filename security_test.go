package gridkv_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/freeport"
	"github.com/feellmoose/gridkv/internal/testlog"
	"github.com/feellmoose/gridkv/transport"
)

// secLog keeps what a node logged, so a test can check that a refusal was logged.
type secLog = testlog.Recorder

// secFreeAddr returns a loopback address whose port is free for TCP and UDP right now.
func secFreeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// secNodeOptions are the options of a small, quick test node.
func secNodeOptions(id, addr string, seeds []string, log *secLog) *gridkv.GridKVOptions {
	timings := gridkv.LocalTimings()
	timings.JoinTimeout = 3 * time.Second
	return &gridkv.GridKVOptions{
		LocalNodeID:  id,
		LocalAddress: addr,
		SeedAddrs:    seeds,
		Partitions:   4,
		Timings:      &timings,
		Logger:       slog.New(log),
		Network:      &transport.NetworkOptions{ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second},
	}
}

// secCluster starts len(ids) nodes, each shaped by opt, and waits until they serve.
func secCluster(t *testing.T, n int, opt func(o *gridkv.GridKVOptions)) ([]*gridkv.GridKV, []string, []*secLog) {
	t.Helper()
	var nodes []*gridkv.GridKV
	var addrs []string
	var logs []*secLog
	for i := range n {
		addr := secFreeAddr(t)
		var seeds []string
		if i > 0 {
			seeds = []string{addrs[0]}
		}
		log := &secLog{}
		o := secNodeOptions(fmt.Sprintf("sec-%d", i), addr, seeds, log)
		o.ReplicaCount = n
		opt(o)
		kv, err := gridkv.NewGridKV(o)
		if err != nil {
			t.Fatalf("node %d: NewGridKV: %v", i, err)
		}
		t.Cleanup(func() { _ = kv.Close() })
		nodes, addrs, logs = append(nodes, kv), append(addrs, addr), append(logs, log)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, kv := range nodes {
		if err := kv.WaitReady(ctx); err != nil {
			t.Fatalf("node %d not ready: %v", i, err)
		}
	}
	return nodes, addrs, logs
}

// secReadWrite writes through the first node and reads through the last.
func secReadWrite(t *testing.T, nodes []*gridkv.GridKV) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i := range 8 {
		key := fmt.Sprintf("k%d", i)
		if err := nodes[0].Set(ctx, key, []byte("v"+key)); err != nil {
			t.Fatalf("Set %s: %v", key, err)
		}
		got, err := nodes[len(nodes)-1].Get(ctx, key)
		if err != nil || string(got) != "v"+key {
			t.Fatalf("Get %s = %q, %v", key, got, err)
		}
	}
}

func TestSecurityClusterKeyLength(t *testing.T) {
	o := secNodeOptions("bad-key", secFreeAddr(t), nil, &secLog{})
	o.ClusterKey = []byte("short")
	_, err := gridkv.NewGridKV(o)
	if err == nil || !strings.Contains(err.Error(), "ClusterKey") || !strings.Contains(err.Error(), "5 bytes") {
		t.Fatalf("NewGridKV with a 5-byte key: %v; want an error naming ClusterKey and its length", err)
	}
}

func TestSecurityClusterKey(t *testing.T) {
	key := bytes.Repeat([]byte("k"), 32)
	nodes, addrs, logs := secCluster(t, 3, func(o *gridkv.GridKVOptions) { o.ClusterKey = key })
	secReadWrite(t, nodes)

	// A node with another key cannot join, and the seed it tried says so.
	log := &secLog{}
	o := secNodeOptions("intruder", secFreeAddr(t), []string{addrs[0]}, log)
	o.ClusterKey = bytes.Repeat([]byte("x"), 32)
	if kv, err := gridkv.NewGridKV(o); err == nil {
		_ = kv.Close()
		t.Fatal("a node with the wrong ClusterKey joined")
	}
	if !logs[0].Contains("failed authentication") {
		t.Fatal("the seed did not log the refused connection")
	}

	// A raw transport with a wrong key, or none, cannot get a request served.
	for _, k := range [][]byte{bytes.Repeat([]byte("x"), 16), nil} {
		tr, err := transport.Listen(transport.NetworkOptions{ClusterKey: k, ReadTimeout: time.Second}, "127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = tr.Call(ctx, addrs[1], 1, []byte{0})
		cancel()
		_ = tr.Close()
		if err == nil {
			t.Fatalf("a Call with key %q was served", k)
		}
	}
	// The cluster is unharmed.
	secReadWrite(t, nodes)
}

func TestSecurityWarnsWithoutKey(t *testing.T) {
	log := &secLog{}
	addr := secFreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	o := secNodeOptions("exposed", addr, nil, log)
	o.Partitions = 1
	o.ReplicaCount = 1
	o.Network.BindAddr = net.JoinHostPort("0.0.0.0", port)
	kv, err := gridkv.NewGridKV(o)
	if err != nil {
		t.Skipf("cannot bind the wildcard address here: %v", err)
	}
	_ = kv.Close()
	if !log.Contains("without a ClusterKey") {
		t.Fatal("no warning for a node exposed without a ClusterKey")
	}
}

// secPKI is a test certificate authority.
type secPKI struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newSecPKI(t *testing.T, name string) *secPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &secPKI{cert: cert, key: key, pool: pool}
}

// issue returns a certificate for 127.0.0.1, good for both server and client use.
func (p *secPKI) issue(t *testing.T, name string, serial int64) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// secTLSConfig is a node's mutual-TLS config: its certificate, and trust in ca only.
func secTLSConfig(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
		ClientCAs:    ca,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

func TestSecurityTLS(t *testing.T) {
	ca := newSecPKI(t, "gridkv test CA")
	serial := int64(10)
	nodes, addrs, logs := secCluster(t, 2, func(o *gridkv.GridKVOptions) {
		serial++
		o.TLS = secTLSConfig(ca.issue(t, o.LocalNodeID, serial), ca.pool)
	})
	secReadWrite(t, nodes)

	// A node whose certificate another CA signed cannot join, even though it trusts the
	// cluster's CA.
	rogueCA := newSecPKI(t, "rogue CA")
	o := secNodeOptions("rogue", secFreeAddr(t), []string{addrs[0]}, &secLog{})
	o.TLS = secTLSConfig(rogueCA.issue(t, "rogue", 99), ca.pool)
	if kv, err := gridkv.NewGridKV(o); err == nil {
		_ = kv.Close()
		t.Fatal("a node with a certificate from another CA joined")
	}
	if !logs[0].Contains("failed authentication") {
		t.Fatal("the seed did not log the refused TLS connection")
	}
	secReadWrite(t, nodes)
}
