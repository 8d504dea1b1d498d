#!/bin/sh
echo "hello from lade, ${GREETING:-nobody} in $(pwd) as $(id -u)${1:+ $*}"
