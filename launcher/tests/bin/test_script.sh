#!/bin/bash
# Worker for the launcher tests: touches <dir>/<RANK>.
echo "creating $1/$RANK"
touch "$1/$RANK"
