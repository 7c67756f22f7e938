#!/bin/sh
# Creates the RAM role resnet18-fc runs as (s.yaml `vars.functionRole`): trusted by Function
# Compute, allowed oss:GetObject on <bucket>/uploads/* and oss:PutObject on <bucket>/results/*,
# nothing else. Needs the Alibaba Cloud CLI (`aliyun configure` done, with RAM rights).
#
#   deploy/ram/create-function-role.sh my-images-bucket [resnet18-fc-role]
#
# The same by hand: RAM console > Roles > Create Role > Alibaba Cloud Service > Function Compute,
# then Policies > Create Policy > JSON: paste deploy/ram/function-role-policy.json with your
# bucket name, and grant that policy to the role.
set -eu
bucket=${1:?usage: $0 BUCKET [ROLE]}
role=${2:-resnet18-fc-role}
case "$bucket" in
*[!a-z0-9-]* | "") echo "$0: '$bucket' is not an OSS bucket name" >&2; exit 1 ;;
esac
dir=$(dirname -- "$0")
policy="$role-oss"
aliyun ram CreateRole --RoleName "$role" \
    --AssumeRolePolicyDocument "$(cat "$dir/function-role-trust.json")"
aliyun ram CreatePolicy --PolicyName "$policy" \
    --PolicyDocument "$(sed "s/my-images-bucket/$bucket/g" "$dir/function-role-policy.json")"
aliyun ram AttachPolicyToRole --PolicyType Custom --PolicyName "$policy" --RoleName "$role"
echo "role $role can read $bucket/uploads/* and write $bucket/results/*"
