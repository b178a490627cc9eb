"""TinyLlama Serve on AWS: one CDK stack per environment (``cdk synth -c env=dev``)."""
