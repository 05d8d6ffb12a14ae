"""moto's server (the pinned version of scripts/start-moto.sh) with one change
that keeps every answer and drops a cost.

moto 5.1.22 reads an EC2 resource's tags by scanning its whole tag table with a
pattern per tag (TaggedEC2Resource.get_tags -> describe_tags with a resource-id
filter), and a describe with filters asks each resource for its tags once per
filter. A test suite that shares one moto therefore made every describe slower
with each resource earlier tests tagged: profiled, three quarters of moto's time
went there. Here the tags are read from the same table by the resource's id:
the same list, in the same order (a resource id holds no pattern characters, so
the scan's pattern matched that id alone).
"""

import sys

from moto.ec2.models.core import TaggedEC2Resource
from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix
from moto.server import main


def get_tags(self):
    resource_id = getattr(self, "id", None)
    if not resource_id:
        return []
    tags = dict(self.ec2_backend.tags.get(resource_id, {}))
    kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
    return [
        {"resource_id": resource_id, "key": key, "value": value, "resource_type": kind}
        for key, value in tags.items()
    ]


TaggedEC2Resource.get_tags = get_tags

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
