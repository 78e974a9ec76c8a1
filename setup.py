from setuptools import find_packages, setup

setup(
    name="notifications",
    version="0.1.0",
    description="Notifications center: webhooks in, standardized notifications out on RabbitMQ",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.11",
    packages=[*find_packages(include=["notifications", "notifications.*"]), "twisted.plugins"],
    package_data={
        "twisted": ["plugins/notifications_plugin.py"],
        "notifications": ["static/*"],
    },
    install_requires=[
        "twisted[tls]>=24.7",
        "txamqp>=0.8.2",
        "treq>=24.9",
        "service-identity>=24.1",
        "prometheus-client>=0.20",
        # the gates' JSON parsing and the notifications' encoding
        "orjson>=3.13",
        # the gate calls' short HTTP path (notifications/gatepath.py): llhttp's parser
        "httptools>=0.6",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "hypothesis>=6.100",
            # the status page's test drives Debian's chromium through chromedriver
            "selenium>=4.11",
            # the Salt state's templates are rendered and parsed by tests/test_packaging.py
            "jinja2>=3.1",
            "pyyaml>=6",
            "schemathesis>=4.32,<5",
            # tests/test_docs.py reads the reference and the README as reStructuredText
            "docutils>=0.21",
            # pinned: the formatter's output changes between releases
            "ruff==0.17.6",
        ],
    },
    entry_points={"console_scripts": ["notifications = notifications.cli:main"]},
)
