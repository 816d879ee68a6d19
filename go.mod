module github.com/chihaya/chihaya

go 1.26.8

require (
	github.com/golang/glog v1.2.5
	github.com/julienschmidt/httprouter v1.3.0
)

require github.com/google/go-cmp v0.7.0 // indirect
