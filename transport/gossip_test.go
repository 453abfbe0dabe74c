package transport

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestMemberlistOverGossip(t *testing.T) {
	var trs []*Transport
	var lists []*memberlist.Memberlist
	for i := range 3 {
		tr, _ := newTestTransport(t, testOptions())
		tr.Handle(kindEcho, echo)
		conf := memberlist.DefaultLocalConfig()
		conf.Name = fmt.Sprintf("node-%d", i)
		conf.Transport = tr.Gossip()
		conf.LogOutput = io.Discard
		ml, err := memberlist.Create(conf)
		if err != nil {
			t.Fatalf("memberlist.Create: %v", err)
		}
		trs = append(trs, tr)
		lists = append(lists, ml)
	}
	if got := lists[0].LocalNode().Address(); got != trs[0].Addr() {
		t.Fatalf("memberlist advertises %s, want %s", got, trs[0].Addr())
	}
	for i := 1; i < 3; i++ {
		if _, err := lists[i].Join([]string{trs[0].Addr()}); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	for i, ml := range lists {
		eventually(t, 10*time.Second, fmt.Sprintf("node %d to see 3 members", i), func() bool {
			return ml.NumMembers() == 3
		})
	}

	// Shutting gossip down leaves the shared port serving requests.
	for _, ml := range lists {
		if err := ml.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := trs[1].Call(context.Background(), trs[0].Addr(), kindEcho, []byte("x")); err != nil {
		t.Fatalf("Call after memberlist shutdown: %v", err)
	}

	// A new memberlist can start on the same transport.
	conf := memberlist.DefaultLocalConfig()
	conf.Name = "node-0-again"
	conf.Transport = trs[0].Gossip()
	conf.LogOutput = io.Discard
	ml, err := memberlist.Create(conf)
	if err != nil {
		t.Fatalf("second memberlist: %v", err)
	}
	if err := ml.Shutdown(); err != nil {
		t.Fatal(err)
	}
}
