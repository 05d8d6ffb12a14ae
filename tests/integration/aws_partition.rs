//! The partition (`aws`, `aws-cn`, `aws-us-gov`) is read from the caller's
//! identity, never assumed: ARNs a step writes itself carry it.

use crate::support::Env;
use crate::support::aws::{moto, unique_stack};
use crate::support::faults::{Fault, FaultProxy, Rule};

#[test]
fn in_the_china_partition_the_identity_and_the_bucket_arn_say_aws_cn() {
    // moto answers as the `aws` partition; STS in China answers `arn:aws-cn:…`.
    let china = Rule {
        action: "GetCallerIdentity",
        fault: Fault::RewriteAnswer { contains: "<Arn>arn:aws:".into(), from: "<Arn>arn:aws:", to: "<Arn>arn:aws-cn:" },
        times: None,
    };
    let proxy = FaultProxy::start(&moto(), vec![china]);
    let env = Env::sqlite();
    let stack = unique_stack("cn");
    let wf = env.write(
        "china.yaml",
        "name: china\ninputs: { stack: {} }\ndefaults: { with: { stack: \"${{ inputs.stack }}\", region: eu-west-3 } }\nsteps:\n  - id: identity\n    uses: aws.sts.caller_identity\n  - id: documents\n    uses: aws.s3.bucket\n    with: { name: \"${{ inputs.stack }}-documents\" }\n",
    );
    let out = env.run_with(
        &["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")],
        &[("AWS_ENDPOINT_URL", &proxy.url)],
    );
    out.expect_success();
    let run = env.only_run().id;
    let identity = env.step(&run, "identity").outputs.unwrap();
    assert_eq!(identity["partition"], "aws-cn", "{identity:?}");
    let bucket = env.step(&run, "documents").outputs.unwrap();
    assert_eq!(bucket["arn"], format!("arn:aws-cn:s3:::{stack}-documents"), "{bucket:?}");
}
