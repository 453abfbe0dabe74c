// Package storepb holds the protobuf messages of the store package's wire
// formats: command batches (one per Raft log entry) and snapshot records.
//
// The store package hand-encodes these messages on its hot paths; this
// package is the schema of record and is used by tests to prove the hand-made
// bytes match.
package storepb

// Regenerate with protoc 3.21+ and protoc-gen-go v1.36.12 on PATH
// (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12, or
// go build -o DIR google.golang.org/protobuf/cmd/protoc-gen-go inside this
// module, which pins that version):
//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative command.proto
