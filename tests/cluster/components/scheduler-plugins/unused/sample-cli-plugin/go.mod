// A stand-in for k8s.io/sample-cli-plugin, which k8s.io/kubernetes requires and nothing built here
// imports (see ../../go.mod).
module k8s.io/sample-cli-plugin

go 1.23.0
